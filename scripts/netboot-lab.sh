#!/usr/bin/env bash
# The netboot lab's artifacts, built from Debian packages into a scratch directory (nothing
# prebuilt is committed): `scripts/netboot-lab.sh DIR` installs what it needs (QEMU, iPXE
# ROMs, busybox, syslinux, mtools) when missing, extracts a distribution kernel from its
# package, and builds
#   DIR/vmlinuz            the kernel (installer, wipe ramdisk and the installed OS boot it)
#   DIR/installer.img      the installer initramfs: reads /proc/cmdline (maas.*), fetches its
#                          per-host config, streams the root image onto /dev/vda, checks its
#                          sha256, hands the first-boot URL to the new OS, calls back, powers off;
#                          with maas.wipe=METHOD it zeroes /dev/vda and reports what it wiped
#   DIR/os.img             the "OS image": a syslinux-bootable FAT disk whose initramfs reports
#                          its first boot to the URL the installer left on the disk
#   DIR/vm-chassis.sh      ipmi_sim's chassis_control program that makes a BMC drive a QEMU VM
# Idempotent: a finished build of this version of the script (DIR/.done) is reused.
set -euo pipefail
dir=${1:?usage: scripts/netboot-lab.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
stamp=$(sha256sum "$0" | cut -d' ' -f1)
[ "$(cat "$dir/.done" 2>/dev/null)" = "$stamp" ] && exit 0

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -e /usr/lib/ipxe/qemu/efi-virtio.rom ] || [ -e /usr/share/qemu/efi-virtio.rom ] || need+=(ipxe-qemu)
[ -x /bin/busybox ] && busybox --list | grep -qx sha256sum || need+=(busybox-static)
command -v syslinux >/dev/null || need+=(syslinux syslinux-common)
command -v mcopy >/dev/null || need+=(mtools)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
if [ ${#need[@]} -gt 0 ]; then
  echo "netboot lab: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A distribution kernel, extracted from its package (not installed).
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
(cd "$work" && apt-get download -q "$pkg" >/dev/null)
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
cp "$work"/k/boot/vmlinuz-* "$dir/vmlinuz"
modules=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net)

# The common part of both initramfs: busybox, the virtio modules, and a network up on
# QEMU's user network (10.0.2.2 is the host's loopback).
base_root() {
  local root=$1
  mkdir -p "$root"/{bin,proc,sys,dev,tmp,lib/modules}
  cp /bin/busybox "$root/bin/busybox"
  for m in "${modules[@]}"; do
    f=$(find "$work/k/lib/modules" -name "$m.ko*" | head -1)
    case "$f" in
      *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
      *.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
      *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
  done
  cat > "$root/lib/common.sh" <<'EOF'
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net; do
  insmod /lib/modules/$m.ko 2>/dev/null
done
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
arg() { for a in $(cat /proc/cmdline); do case "$a" in "$1="*) echo "${a#*=}" ;; esac; done; }
# report URL JSON: POST with retries (a callback may race the step before it).
report() {
  i=0
  while [ $i -lt 30 ]; do
    wget -q -O /tmp/answer --post-data "$2" "$1" && { echo "maas: reported $2"; return 0; }
    i=$((i + 1)); sleep 2
  done
  echo "maas: could not report to $1"
}
EOF
}

pack() { (cd "$1" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9) > "$2"; }

# The installer (and wipe ramdisk).
base_root "$work/inst"
cat > "$work/inst/init" <<'EOF'
#!/bin/busybox sh
. /lib/common.sh
cb=$(arg maas.callback)
if [ -n "$(arg maas.wipe)" ]; then
  echo "maas: wiping /dev/vda ($(arg maas.wipe))"
  dd if=/dev/zero of=/dev/vda bs=1M 2>/tmp/log; sync
  report "$cb" "{\"succeeded\": true, \"wiped\": [\"/dev/vda zeroed ($(arg maas.wipe))\"]}"
  poweroff -f
fi
wget -q -O /tmp/config "$(arg maas.config)" || echo "maas: no config"
. /tmp/config
echo "maas: installing $(arg maas.host), mode ${LAB_MODE:-normal}"
case "$LAB_MODE" in
  silent) echo "maas: never calling back"; while true; do sleep 60; done ;;
  fail) report "$cb" '{"succeeded": false, "error": "lab installer told to fail", "log": "partitioning /dev/vda: simulated failure"}'; poweroff -f ;;
esac
if ! wget -q -O /tmp/root.img "$(arg maas.image_url)" > /tmp/log 2>&1; then
  report "$cb" '{"succeeded": false, "error": "cannot fetch the root image"}'; poweroff -f
fi
want=$(arg maas.image_sha256)
size=$(stat -c %s /tmp/root.img)
dd if=/tmp/root.img of=/dev/vda bs=1M conv=fsync 2>>/tmp/log
# The installed OS finds its first-boot URL 48 MiB into the disk (a config drive, in short).
printf 'FIRST_BOOT_URL=%s\n' "$FIRST_BOOT_URL" | dd of=/dev/vda bs=1M seek=48 conv=fsync 2>>/tmp/log
sync
got=$(head -c "$size" /dev/vda | sha256sum | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  report "$cb" "{\"succeeded\": false, \"error\": \"sha256 of /dev/vda is $got, expected $want\"}"
else
  report "$cb" '{"succeeded": true}'
fi
poweroff -f
EOF
chmod +x "$work/inst/init"
pack "$work/inst" "$dir/installer.img"

# The installed OS: announces itself from its own disk.
base_root "$work/os"
cat > "$work/os/init" <<'EOF'
#!/bin/busybox sh
. /lib/common.sh
echo "maas lab OS: first boot from disk"
dd if=/dev/vda bs=1M skip=48 count=1 2>/dev/null | head -1 | tr -d '\0' > /tmp/firstboot
. /tmp/firstboot
[ -n "$FIRST_BOOT_URL" ] && report "$FIRST_BOOT_URL" '{"succeeded": true}'
echo "maas lab OS: I am up"
while true; do sleep 60; done
EOF
chmod +x "$work/os/init"
pack "$work/os" "$work/os-initrd.img"
rm -f "$dir/os.img"
truncate -s 32M "$dir/os.img"
mkfs.vfat -n MAASOS "$dir/os.img" >/dev/null
printf 'DEFAULT os\nLABEL os\n  KERNEL vmlinuz\n  APPEND initrd=initrd.img console=ttyS0 quiet\n' > "$work/syslinux.cfg"
mcopy -i "$dir/os.img" "$dir/vmlinuz" ::vmlinuz
mcopy -i "$dir/os.img" "$work/os-initrd.img" ::initrd.img
mcopy -i "$dir/os.img" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$dir/os.img"

# The BMC's chassis: ipmi_sim runs `vm-chassis.sh BMCDIR get power|boot` / `set power 0|1`,
# `set reset 1`, `set shutdown 1`, `set boot DEV`. BMCDIR/vm.env names the VM's MAC, disk
# and the boot service's port. Power on starts QEMU (TCG), booting the network after a PXE
# flag and the disk otherwise; the flag is one-time. Power off kills that VM's PID only.
cat > "$dir/vm-chassis.sh" <<'EOF'
#!/bin/sh
d="$1"; shift
. "$d/vm.env"
echo "$*" >> "$d/calls.log"
# A BMC answers at once and acts in the background, as real ones do: starting QEMU (TCG)
# takes a second or more, which a chassis program must not make the BMC's answer wait for.
alive() {
  pid=$(cat "$d/qemu.pid" 2>/dev/null) || return 1
  st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ]
}
running() { [ -e "$d/starting" ] || alive; }
stop() {
  i=0; while [ -e "$d/starting" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if alive; then
    pid=$(cat "$d/qemu.pid"); kill -9 "$pid" 2>/dev/null
    i=0; while alive && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  fi
  rm -f "$d/qemu.pid"
}
start() {
  running && return 0
  dev=c; [ "$(cat "$d/boot" 2>/dev/null)" = pxe ] && dev=n
  echo default > "$d/boot"
  echo "start boot=$dev" >> "$d/calls.log"
  touch "$d/starting"
  (
    qemu-system-x86_64 -m 256 -display none -no-reboot -daemonize -pidfile "$d/qemu.pid" \
      -chardev file,id=c0,path="$d/console.log",append=on -serial chardev:c0 \
      -netdev "user,id=n0,bootfile=http://10.0.2.2:$BOOT_PORT/boot/$MAC" \
      -device "virtio-net-pci,netdev=n0,mac=$MAC" \
      -drive "file=$DISK,format=raw,if=virtio" -boot "$dev" >>"$d/qemu.log" 2>&1
    rm -f "$d/starting"
  ) </dev/null >/dev/null 2>&1 &
}
op="$1"; shift
case "$op" in
  get)
    for p in "$@"; do
      case "$p" in
        power) if running; then echo "power:1"; else echo "power:0"; fi ;;
        boot) v=default; [ -r "$d/boot" ] && read -r v < "$d/boot"; echo "boot:$v" ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      case "$1" in
        power) if [ "$2" = 1 ]; then start; else stop; fi ;;
        reset) stop; start ;;
        shutdown) stop ;;
        boot) echo "$2" > "$d/boot" ;;
      esac
      shift 2
    done ;;
esac
exit 0
EOF
chmod +x "$dir/vm-chassis.sh"
echo "$stamp" > "$dir/.done"
echo "netboot lab built in $dir" >&2
