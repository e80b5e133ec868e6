"""PC device models for `pyhost boot`, kvmtool style: a bus of port/MMIO ranges (bus.py)
that one exit switch dispatches to (pyhost.machine), and one module per device.

Every device method runs under the machine's lock: the VCPU thread (exits), the PIT's
timer thread and the console's reader thread all take it before touching device state.
"""
