"""Code generation: program plan → libbpf-style C → BPF ELF artifact with an embedded manifest."""
