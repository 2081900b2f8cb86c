#!/bin/bash
# t-image-defconfig: images/*_defconfig round-trip through savedefconfig
# (tests/image/t-defconfig.sh; part of make check because it takes seconds).
exec bash "$(dirname "$0")/../image/t-defconfig.sh"
