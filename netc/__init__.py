"""netc: a compiler toolchain and runtime that brings eBPF to container networking."""

__version__ = "0.1.0"
