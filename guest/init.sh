#!/bin/sh
# kindling's guest init: /init in the initramfs, /sbin/init on the ext4 root. Run by busybox's ash as PID 1.
#
# 1. mount /proc, /sys, /dev (devtmpfs) and a tmpfs on /tmp
# 2. write 123 to the boot-timer device: "boot complete" for the VMM's boot-time measurement
# 3. print the marker line "kindling: init ready" on the console
# 4. with kindling.cmd=<base64 of a shell command> on the kernel command line: run it with sh -c on the
#    console, print "kindling: exit status <n>", end the VM.
#    With kindling.exec=<base64 of a shell command> (what `kindling exec` sends): the same, but the
#    command's stdin is /dev/null and its output is framed so the host can tell it from the kernel's log:
#    every line of its stdout arrives as RS "1" line, of its stderr as RS "2" line (RS = byte 0x1e, the
#    ASCII record separator), and the kernel's console messages are turned down to emergencies first.
#    Without either: an interactive shell on the serial console; the VM ends when it exits, or on
#    `reboot`/`poweroff`/`halt` typed in it.
#
# "End the VM" is `reboot -f`, not `poweroff -f`: with no ACPI there is no way to power off, and the
# kernel turns a power-off into a halt that would leave the VM idling forever. A reboot with reboot=k on
# the command line writes the reset command to the i8042 port 0x64, which kindling treats as the end.

export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# CONFIG_DEVTMPFS_MOUNT mounts /dev only for a disk root, so an initramfs root mounts it here.
grep -q '^devtmpfs /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
hostname kindling

# The boot-timer device (Firecracker's boot-time measurement): an 8-bit write of 123 at BOOT_TIMER_START
# from src/arch/x86_64/layout.ts. The guest build checks that this address matches that constant.
devmem 0xc0000000 8 123

echo "kindling: init ready" > /dev/console

# Ends the VM (see the header). `reboot -f` syncs the disks, then calls reboot(2) directly.
end_vm() {
  reboot -f
  sleep 5  # reboot(2) does not return; this only keeps PID 1 from exiting (a kernel panic) if it fails
}

# busybox `reboot`, `poweroff` and `halt` (without -f) ask PID 1 by signal: TERM, USR2 and USR1.
trap end_vm TERM USR1 USR2

# The kernel command line is space-separated `name=value` words; options with a dot in the name are
# left for /proc/cmdline and not passed to init. base64 has no spaces, so any command survives intact.
set -f  # no globbing while splitting the command line into words
encoded=
framed=
for word in $(cat /proc/cmdline); do
  case "$word" in
    kindling.cmd=*) encoded="${word#kindling.cmd=}" ;;
    kindling.exec=*) encoded="${word#kindling.exec=}"; framed=1 ;;
  esac
done
set +f

# kindling.exec: run "$1" with its stdout and stderr framed (see the header), print its exit status.
run_framed() {
  echo 1 > /proc/sys/kernel/printk  # console_loglevel 1: only KERN_EMERG reaches the console now
  rs=$(printf '\036')
  # awk, not sed: busybox sed holds its output until it exits, even on a terminal; fflush() sends each
  # line as it comes, so the host sees output while the command runs (and can answer it).
  mkfifo /tmp/.kindling-stderr
  awk -v p="${rs}2" '{ print p $0; fflush() }' < /tmp/.kindling-stderr > /dev/console &
  { sh -c "$1" < /dev/null 2> /tmp/.kindling-stderr; echo $? > /tmp/.kindling-status; } | awk -v p="${rs}1" '{ print p $0; fflush() }' > /dev/console
  wait
  status=$(cat /tmp/.kindling-status)
  # Killed by a signal (128 + n): the kernel's last words on it (e.g. "segfault at ...") are in its log,
  # which the console no longer shows; pass them on as console lines.
  [ "$status" -gt 128 ] 2>/dev/null && dmesg | tail -n 8 | sed 's/^/kindling: dmesg: /' > /dev/console
  echo "kindling: exit status $status" > /dev/console
}

if [ -n "$encoded" ]; then
  if ! cmd=$(printf '%s' "$encoded" | base64 -d) || [ -z "$cmd" ]; then
    echo "kindling: the command on the kernel command line is not valid base64" > /dev/console
    echo "kindling: exit status 127" > /dev/console
  elif [ -n "$framed" ]; then
    run_framed "$cmd"
  else
    # cttyhack gives the command the serial port as its controlling tty, so ^C reaches it.
    setsid cttyhack sh -c "$cmd" < /dev/console > /dev/console 2>&1
    echo "kindling: exit status $?" > /dev/console
  fi
  end_vm
fi

# Interactive: the shell runs in the background so that this script, PID 1, stays in `wait`, where the
# traps above can run as soon as a signal arrives.
setsid cttyhack sh < /dev/console > /dev/console 2>&1 &
wait $!
end_vm
