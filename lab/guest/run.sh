#!/bin/sh
# Runs inside a lab guest (SVM: under virtme-ng; VMX: from the lab's /init).
# $1: environment file written by the host (lab/runner.py); it defines
#   KVMPORT_LAB, LAB_KVM_MODULES (modules, dependencies first, insmod order),
#   LAB_CWD, LAB_RULES, LAB_PYTHON, LAB_UEVENTD, LAB_RNG_SEED, LAB_CMD (file
#   holding the command) and PATH.
# Protocol on the console: @@KVMPORT-LAB-START@@, then the command's output,
# then dmesg between DMESG-BEGIN/END markers, then @@KVMPORT-LAB-EXIT=<status>@@.

set -a
. "$1"
set +a
export HOME=/root

up() { cut -d' ' -f1 /proc/uptime; }

# Entropy first: without it getrandom() (Python's random) can block for minutes.
"$LAB_PYTHON" "$(dirname "$LAB_UEVENTD")/seed_rng.py" "$LAB_RNG_SEED" || \
	echo "lab: could not seed the RNG" >&2
unset LAB_RNG_SEED

# The reference hypervisor: Linux's own KVM for this lab's CPU.
for m in $LAB_KVM_MODULES; do
	insmod "$m" 2>/dev/null || modprobe "$(basename "$m" | sed 's/\.ko.*//')" || \
		echo "lab: loading $m failed" >&2
done

# Group kvm and the udev policy Debian applies to /dev/kvm.
if ! grep -q '^kvm:' /etc/group; then
	if ! echo 'kvm:x:993:' >>/etc/group 2>/dev/null; then
		cp /etc/group /tmp/lab-group && echo 'kvm:x:993:' >>/tmp/lab-group && \
			mount --bind /tmp/lab-group /etc/group
	fi
fi
if [ -e /dev/kvm ]; then
	chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# No udevd in the lab: a small uevent listener applies the project's rules.
"$LAB_PYTHON" "$LAB_UEVENTD" $LAB_RULES &
ueventd=$!
# Wait until it listens (it touches the ready file), at most ~10 s.
i=0
while [ ! -e /tmp/lab-ueventd.ready ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done

cd "$LAB_CWD" || exit 1
echo "@@KVMPORT-LAB-START@@ uptime=$(up)"
sh "$LAB_CMD" </dev/null
rc=$?
echo "@@KVMPORT-LAB-DONE@@ uptime=$(up)"
kill "$ueventd" 2>/dev/null
echo "@@KVMPORT-LAB-DMESG-BEGIN@@"
dmesg --color=never 2>/dev/null || dmesg
echo "@@KVMPORT-LAB-DMESG-END@@"
echo "@@KVMPORT-LAB-EXIT=$rc@@"
exit $rc
