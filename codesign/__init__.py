"""codesign: joint accuracy/hardware-cost optimisation of LLMs (what joins nets and hwcost)."""
