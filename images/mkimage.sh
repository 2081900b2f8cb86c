#!/bin/bash
# mkimage.sh O — turn the configuration in O/.config and the programs in
# O/bin into a bootable image under O/images/<CONFIG_IMAGE_NAME>/:
#   vmlinuz          Debian's kernel (linux-image-amd64's current version)
#   initramfs.cpio.gz  busybox-static, velo programs and their libraries,
#                    the NIC/DPDK-binding modules, the models, the velod
#                    configuration and keys, dropbear; /init is velo-init
#   manifest         sha256 of every file in the initramfs, of the kernel and
#                    of the initramfs itself
#   boot-qemu.sh     boots it in QEMU (see its header)
# Packages are fetched by images/fetch.sh (apt-get download, kept in
# O/images/debs/) and unpacked with dpkg-deb -x — never installed on the
# host.  Reproducible: the same configuration, programs and packages give the
# same bytes (fixed mtimes from SOURCE_DATE_EPOCH, sorted newc cpio without
# timestamps, gzip -n).
# Inputs kept between runs (delete to renew): O/images/debs/ (packages),
# O/images/velod.keys (the pre-shared key clients use).
# Environment: AUTHORIZED_KEYS=file overrides CONFIG_IMAGE_AUTHORIZED_KEYS.
set -euo pipefail
O=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC1091
. "$O/include/config/auto.conf"
name=${CONFIG_IMAGE_NAME:-dev}
[ "${CONFIG_BOOT_INIT:-}" = y ] || { echo "mkimage: CONFIG_BOOT_INIT is not set (make O=... qemu_defconfig)" >&2; exit 1; }
out=$O/images/$name
debs=$O/images/debs
# Outside O: make reads every *.d under O (dependency files), and Debian
# packages hold directories named *.d.
work=$(mktemp -d /tmp/velo-mkimage.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$SRC" log -1 --format=%ct 2>/dev/null || echo 0)}
export LC_ALL=C TZ=UTC

log() { printf '  %-8s %s\n' "$1" "$2"; }

# ---- packages -------------------------------------------------------------
"$SRC/images/fetch.sh" "$O" || { echo "mkimage: fetching the packages failed" >&2; exit 1; }
mkdir -p "$work/x" "$root"
while read -r d; do dpkg-deb -x "$debs/$d" "$work/x"; done <"$debs/selected"
kpkg=$(head -n 1 "$debs/selected" | cut -d_ -f1)
kver=${kpkg#linux-image-}
[ -f "$work/x/boot/vmlinuz-$kver" ] || { echo "mkimage: no vmlinuz-$kver in $kpkg" >&2; exit 1; }

# ---- tree -----------------------------------------------------------------
log ROOT "$name"
# /lib and /lib64 as on the build host (merged /usr: links), so a library
# that ldd names under /lib and the EAL opens under /usr/lib is one file.
mkdir -p "$root"/usr/lib "$root"/usr/lib64
for d in lib lib64; do
	if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$root/$d"; else mkdir -p "$root/$d"; fi
done
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/velo,etc/dropbear,proc,sys,dev,run,tmp,root/.ssh,var/lib/velo/models}
chmod 700 "$root/root" "$root/root/.ssh"
ln -s /run "$root/var/run"	# DPDK's runtime directory is /var/run/dpdk
install -m 755 "$work/x/bin/busybox" "$root/bin/busybox"
# Applet links from the busybox binary itself (static: runs on the host).
"$work/x/bin/busybox" --list-full | while read -r a; do
	[ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done

# Programs and every library ldd resolves (plus the loader).
copy_with_libs() {
	local f=$1 dst=$2 lib
	install -D -m 755 "$f" "$root$dst"
	for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' | sort -u); do
		copy_lib "$lib"
	done
}
# A library with its chain of links kept as links: a file reached both by
# its soname and by a plugin path must stay one file (one inode), or the
# loader maps it twice (DPDK's bus_pci panics on a second registration).
copy_lib() {
	local l=$1 t
	while [ -L "$l" ]; do
		t=$(readlink "$l")
		mkdir -p "$root$(dirname "$l")"
		[ -e "$root$l" ] || [ -L "$root$l" ] || ln -s "$t" "$root$l"
		case $t in /*) l=$t ;; *) l=$(dirname "$l")/$t ;; esac
	done
	[ -e "$root$l" ] || install -D -m 755 "$l" "$root$l"
}
for p in velo-init velo-mgmtd velod veloctl velo-client velo-keygen; do
	[ -x "$O/bin/$p" ] && copy_with_libs "$O/bin/$p" "/usr/bin/$p"
done
ln -sf /usr/bin/velo-init "$root/init"
if [ "${CONFIG_IMAGE_DROPBEAR:-}" = y ]; then
	copy_with_libs "$work/x/usr/sbin/dropbear" /usr/sbin/dropbear
	copy_with_libs "$work/x/usr/bin/dropbearkey" /usr/bin/dropbearkey
fi
# DPDK drivers are plugins the EAL opens at run time (ldd does not see them).
if [ "${CONFIG_DP_DPDK:-}" = y ]; then
	pmd=$(ls -d /usr/lib/x86_64-linux-gnu/dpdk/pmds-* 2>/dev/null | head -1 || true)
	for so in librte_net_virtio librte_bus_pci librte_bus_vdev librte_mempool_ring; do
		# The EAL loads the names ending in .so of its plugin directory: a
		# link there to the library in its own place, so that one velod
		# already links (librte_bus_pci) is the same file and not loaded twice.
		[ -e "$pmd/$so.so" ] || continue
		copy_with_libs "$(readlink -f "$pmd/$so.so")" "$(readlink -f "$pmd/$so.so")"
		copy_lib "$pmd/$so.so"
	done
fi

# Kernel modules: the NICs (virtio-net for QEMU) and the DPDK binding
# drivers, with their dependencies; modules.dep by depmod -b on the subset.
mods="virtio_pci virtio_net vfio vfio-pci vfio_iommu_type1 uio uio_pci_generic"
kmod=$work/x/lib/modules/$kver
declare -A seen=()
add_mod() {
	local m=$1 f d
	f=$(find "$kmod/kernel" -name "$m.ko" -o -name "${m//_/-}.ko" -o -name "${m//-/_}.ko" | head -1)
	[ -n "$f" ] || return 0	# built into the kernel
	[ -n "${seen[$f]:-}" ] && return 0
	seen[$f]=1
	for d in $(/usr/sbin/modinfo -F depends "$f" | tr ',' ' '); do add_mod "$d"; done
	install -D -m 644 "$f" "$root/lib/modules/$kver/${f#"$kmod"/}"
}
for m in $mods; do add_mod "$m"; done
cp "$kmod"/modules.{builtin,order,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
/usr/sbin/depmod -b "$root" "$kver"
printf '%s\n' virtio_pci virtio_net >"$root/etc/velo/modules"
log MODULES "$(find "$root/lib/modules" -name '*.ko' | wc -l) modules of $kver"

# Models and velod's configuration.
models_json=
for m in $(cd "$SRC" && eval "ls -1 ${CONFIG_IMAGE_MODELS:-}"); do
	install -m 644 "$SRC/$m" "$root/var/lib/velo/models/$(basename "$m")"
	models_json="$models_json${models_json:+, }{\"image\": \"/var/lib/velo/models/$(basename "$m")\", \"label\": \"production\", \"backend\": \"cpu\", \"seqs_max\": $CONFIG_IMAGE_MODEL_SEQS_MAX, \"step_tokens_max\": $CONFIG_IMAGE_MODEL_STEP_TOKENS_MAX, \"kv_blocks\": $CONFIG_IMAGE_MODEL_KV_BLOCKS, \"threads\": 1}"
done
[ -f "$O/images/velod.keys" ] || "$O/bin/velo-keygen" -o "$O/images/velod.keys" --id 1 --comment "image $name" >/dev/null
install -m 600 "$O/images/velod.keys" "$root/etc/velo/velod.keys"
cat >"$root/etc/velo/velod.json" <<EOF
{
  "keys": "/etc/velo/velod.keys",
  "models": [$models_json]
}
EOF
install -m 644 "$O/.config" "$root/etc/velo/config"

# Users, SSH.
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
echo 'root:x:0:' >"$root/etc/group"
echo 'root:*:0:0:99999:7:::' >"$root/etc/shadow"; chmod 600 "$root/etc/shadow"
echo "/bin/sh" >"$root/etc/shells"
echo "velo-$name" >"$root/etc/hostname"
ak=${AUTHORIZED_KEYS:-${CONFIG_IMAGE_AUTHORIZED_KEYS:-}}
: >"$root/root/.ssh/authorized_keys"
if [ -n "$ak" ]; then
	[ "${ak#/}" = "$ak" ] && ak=$SRC/$ak
	grep -vE '^\s*(#|$)' "$ak" | sed 's|^|command="veloctl --socket /run/velo/mgmt.sock",no-port-forwarding,no-agent-forwarding,no-X11-forwarding |' \
		>"$root/root/.ssh/authorized_keys"
fi
chmod 600 "$root/root/.ssh/authorized_keys"

# ---- archive --------------------------------------------------------------
mkdir -p "$out"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
chmod 755 "$root"	# "/" of the booted box: the EAL refuses a world-writable path
(cd "$root" && find . | sort | cpio -o -H newc --reproducible -R 0:0 --quiet) | gzip -n -9 >"$work/initramfs.cpio.gz"
install -m 644 "$work/x/boot/vmlinuz-$kver" "$out/vmlinuz"
install -m 644 "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
(cd "$root" && find . -type f | sort | xargs -d '\n' sha256sum) >"$out/manifest"
(cd "$out" && sha256sum vmlinuz initramfs.cpio.gz) >>"$out/manifest"
echo "# kernel $kver, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH" >>"$out/manifest"
# The UDP host forward goes to the network velod serves on: the dataplane
# NIC's with the DPDK transport, the management NIC's with the socket one.
fwd=',hostfwd=udp:127.0.0.1:"${UDP_PORT:-7400}"-'
if [ "${CONFIG_BOOT_DP_TRANSPORT_DPDK:-}" = y ]; then
	dpfwd="$fwd${CONFIG_BOOT_DP_ADDR}:${CONFIG_IMAGE_VELOD_PORT:-7400}" mgmtfwd=
else
	dpfwd= mgmtfwd="$fwd${CONFIG_BOOT_MGMT_ADDR%/*}:${CONFIG_IMAGE_VELOD_PORT:-7400}"
fi
sed -e "s|@CMDLINE@|${CONFIG_IMAGE_KERNEL_CMDLINE:-console=ttyS0}|" -e "s|@DPFWD@|$dpfwd|" \
	-e "s|@MGMTFWD@|$mgmtfwd|" -e "s|@MGMTADDR@|${CONFIG_BOOT_MGMT_ADDR%/*}|" \
	"$SRC/images/boot-qemu.sh.in" >"$out/boot-qemu.sh"
chmod 755 "$out/boot-qemu.sh"
log IMAGE "$out ($(du -b "$out/initramfs.cpio.gz" | cut -f1) bytes initramfs, $(wc -l <"$out/manifest") manifest lines)"
