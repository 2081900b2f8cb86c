#!/bin/bash
# t-image-build: every images/*_defconfig configures with the DPDK transport
# as its default, the top-level defconfig keeps the socket, and voice_edge
# compiles (tests/image/t-build.sh; trading is compiled by make check-image,
# qemu is the image check-image builds: one full build here keeps make check
# within its per-test bound on 2 cores).
IMAGE_BUILD=${IMAGE_BUILD:-voice_edge} exec bash "$(dirname "$0")/../image/t-build.sh"
