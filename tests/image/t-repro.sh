#!/bin/bash
# t-repro.sh O — make image twice from the same configuration, programs and
# packages: kernel, initramfs and manifest must be the same bytes.  Fails
# when a timestamp, a file order or a random byte leaks into the image.
set -u
O=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
name=$(sed -n 's/^CONFIG_IMAGE_NAME="\(.*\)"$/\1/p' "$O/.config")
img=$O/images/$name
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# The epoch is an input: fixed once for both builds (mkimage takes the last
# commit's time, and a commit landing between the two builds in a shared
# tree is a different input, not a reproducibility bug).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$SRC" log -1 --format=%ct 2>/dev/null || echo 0)}
"$SRC/images/mkimage.sh" "$O" >/dev/null || { echo "FAIL mkimage (1)"; exit 1; }
cp "$img/vmlinuz" "$img/initramfs.cpio.gz" "$img/manifest" "$T/"
sleep 1	# a leaked mtime would differ
"$SRC/images/mkimage.sh" "$O" >/dev/null || { echo "FAIL mkimage (2)"; exit 1; }
rc=0
for f in vmlinuz initramfs.cpio.gz manifest; do
	if cmp -s "$T/$f" "$img/$f"; then
		echo "ok   $f $(sha256sum <"$img/$f" | cut -c1-16)"
	else
		echo "FAIL $f differs between two builds"; rc=1
	fi
done
# Name what differs: the manifest lists every file's hash.
[ "$rc" = 0 ] || diff "$T/manifest" "$img/manifest" | head -n 20 | sed "s/^/    /"
# The manifest lists every file of the initramfs.
n_cpio=$(zcat "$img/initramfs.cpio.gz" | cpio -it --quiet 2>/dev/null | wc -l)
n_files=$(grep -c '  \./' "$img/manifest")
echo "cpio entries $n_cpio, manifest files $n_files"
[ "$n_files" -gt 50 ] || { echo "FAIL manifest lists only $n_files files"; rc=1; }
exit $rc
