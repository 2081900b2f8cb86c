# velo — top-level Makefile.
#
# One make, no recursion: every module directory has a Makefile fragment with
# Kbuild-style lists, which this file includes in order (list order is init
# order).  Fragment variables, paths relative to the fragment's directory:
#
#   obj-y / obj-$(CONFIG_X)    objects of the appliance library (libvelo-core.a);
#                              a name ending in / descends into that directory
#   client-y                   objects of the integrators' library (libvelo.a)
#                              which velod links as well
#   prog-y                     programs; <prog>-objs lists their own objects
#   test-y                     cmocka unit tests, one .c each (tests/unit)
#   testlib-y                  objects shared by the unit tests (libvelo-test.a)
#   fuzz-y                     libFuzzer targets, one .c each (tests/fuzz)
#   ldlibs-y                   system libraries (-lsodium ...)
#   deps-y                     Debian packages the configuration needs
#
# Everything is built under build/ (override with O=dir).  V=1 shows commands.

SHELL    := /bin/bash
# Fragments define rules of their own (the CUDA fatbin, the fake driver):
# whatever they define first, a plain `make` builds everything.
.DEFAULT_GOAL := all
O        ?= build
srctree  := $(CURDIR)
KCONFIG_CONFIG := $(O)/.config
export KCONFIG_CONFIG srctree

ifeq ($(V),1)
Q :=
quiet = @:
else
Q := @
quiet = @printf '  %-8s %s\n'
endif

-include $(O)/include/config/auto.conf

CC       ?= cc
CLANG    ?= clang
AR       ?= ar
NVCC     ?= /usr/local/cuda/bin/nvcc

# Debian's base packages needed by the build itself, whatever the config.
deps-base := make gcc clang pkg-config kconfig-frontends libcmocka-dev \
	libclang-rt-14-dev libsodium-dev libck-dev python3

cflags-common := -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla \
	-fno-strict-aliasing -D_GNU_SOURCE -pthread \
	-I$(srctree)/include -I$(O)/include \
	-include $(O)/include/generated/autoconf.h
ifeq ($(CONFIG_DEBUG_SANITIZE),y)
cflags-common += -fsanitize=address,undefined -fno-omit-frame-pointer
ldflags-common += -fsanitize=address,undefined
endif
ifeq ($(CONFIG_CPU_NATIVE),y)
cflags-common += -march=native
else
cflags-common += -march=x86-64-v2 -mtune=generic
endif

# ---------------------------------------------------------------------------
# Walk the fragments.
objs-core :=
objs-client :=
objs-testlib :=
progs :=
tests :=
fuzzers :=
ldlibs :=
deps :=

define include-dir
obj-y :=
client-y :=
testlib-y :=
prog-y :=
test-y :=
fuzz-y :=
ldlibs-y :=
deps-y :=
ccflags-y :=
include $(1)Makefile
objs-core   += $$(addprefix $(O)/$(1),$$(filter %.o,$$(obj-y)))
objs-client += $$(addprefix $(O)/$(1),$$(client-y))
objs-testlib += $$(addprefix $(O)/$(1),$$(testlib-y))
progs       += $$(prog-y)
$$(foreach p,$$(prog-y),$$(eval objs-prog-$$(p) := $$(addprefix $(O)/$(1),$$($$(p)-objs))))
$$(foreach p,$$(prog-y),$$(eval $$(p)-objs :=))
tests       += $$(addprefix $(O)/$(1),$$(basename $$(test-y)))
fuzzers     += $$(addprefix $(O)/fuzz/$(1),$$(basename $$(fuzz-y)))
ldlibs      += $$(ldlibs-y)
deps        += $$(deps-y)
$$(eval ccflags-dir-$(1) := $$(ccflags-y))
subdirs-$(1) := $$(addprefix $(1),$$(filter %/,$$(obj-y)))
$$(foreach d,$$(subdirs-$(1)),$$(eval $$(call include-dir,$$(d))))
endef

# Only walk the tree once a configuration exists: the lists depend on it.
ifneq ($(wildcard $(O)/include/config/auto.conf),)
$(foreach d,tools/lib/ dataplane/ engine/ mgmt/ boot/ tools/ tests/,$(eval $(call include-dir,$(d))))
endif

ldlibs := $(sort $(ldlibs)) -lm -lpthread
progs-bin := $(addprefix $(O)/bin/,$(progs))

# ---------------------------------------------------------------------------
# Configuration (kconfig-frontends).
KCONF_ENV := KCONFIG_CONFIG=.config \
	KCONFIG_AUTOHEADER=include/generated/autoconf.h \
	KCONFIG_AUTOCONFIG=include/config/auto.conf srctree=$(srctree)
KCONF = cd $(O) && $(KCONF_ENV) kconfig-conf

.PHONY: all defconfig olddefconfig oldconfig menuconfig savedefconfig \
	deps run check check-unit check-fuzz check-integration fuzz clean distclean \
	bench-proto help

all: $(O)/.config $(O)/include/config/auto.conf
	$(Q)$(MAKE) --no-print-directory build-all

$(O)/.config:
	$(Q)mkdir -p $(O)
	$(quiet) CONFIG defconfig
	$(Q)$(KCONF) -s --alldefconfig $(srctree)/Kconfig

defconfig:
	$(Q)mkdir -p $(O)
	$(Q)$(KCONF) -s --alldefconfig $(srctree)/Kconfig
	$(Q)$(MAKE) --no-print-directory syncconfig

%_defconfig: images/%_defconfig
	$(Q)mkdir -p $(O)
	$(Q)$(KCONF) -s --defconfig=$(srctree)/$< $(srctree)/Kconfig
	$(Q)$(MAKE) --no-print-directory syncconfig

olddefconfig oldconfig:
	$(Q)mkdir -p $(O)
	$(Q)$(KCONF) --$@ $(srctree)/Kconfig
	$(Q)$(MAKE) --no-print-directory syncconfig

menuconfig:
	$(Q)mkdir -p $(O)
	$(Q)cd $(O) && $(KCONF_ENV) kconfig-mconf $(srctree)/Kconfig
	$(Q)$(MAKE) --no-print-directory syncconfig

savedefconfig: $(O)/.config
	$(Q)$(KCONF) --savedefconfig=defconfig $(srctree)/Kconfig
	@echo "  minimal config written to $(O)/defconfig"

# auto.conf, autoconf.h and the per-symbol timestamp files.  Symbols new
# since the .config was written take their defaults (olddefconfig) instead
# of prompting: builds never stop for input.
kconfig-files := $(shell find $(srctree) -name Kconfig -not -path '*/$(O)/*' 2>/dev/null)
$(O)/include/config/auto.conf: $(O)/.config $(kconfig-files)
	$(Q)mkdir -p $(O)/include/generated $(O)/include/config
	$(quiet) CONFIG include/generated/autoconf.h
	$(Q)$(KCONF) -s --olddefconfig $(srctree)/Kconfig
	$(Q)$(KCONF) -s --silentoldconfig $(srctree)/Kconfig

.PHONY: syncconfig
syncconfig:
	$(Q)mkdir -p $(O)/include/generated $(O)/include/config
	$(Q)$(KCONF) -s --silentoldconfig $(srctree)/Kconfig

# ---------------------------------------------------------------------------
# Debian packages: `make deps` installs what the configuration needs and is
# missing, and does nothing (quickly) when all is there.
# kconfig-conf itself comes from a package, so the base list goes first.
deps:
	$(Q)$(srctree)/tools/build/deps.sh $(deps-base)
	$(Q)$(MAKE) --no-print-directory $(O)/include/config/auto.conf
	$(Q)$(MAKE) --no-print-directory deps-config

.PHONY: deps-config
deps-config:
	$(Q)$(srctree)/tools/build/deps.sh $(sort $(deps))
	$(if $(CONFIG_BOOT_INIT),$(Q)$(srctree)/images/fetch.sh $(O))

# ---------------------------------------------------------------------------
# Compilation.
.PHONY: build-all
build-all: $(progs-bin) $(tests) $(O)/lib/libvelo.a

# autoconf.h must exist before anything compiles (order-only); what an
# object really depends on is in its .d file, rewritten by fixdep to the
# per-symbol files of the CONFIG_ names its sources and headers mention.
$(O)/%.o: %.c | $(O)/include/config/auto.conf
	$(quiet) CC $<
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(cflags-common) $(ccflags-dir-$(dir $<)) -MMD -MP -c -o $@ $<
	$(Q)$(srctree)/tools/build/fixdep.sh $(@:.o=.d) $(O)/include/config

$(O)/lib/libvelo-core.a: $(objs-core) $(objs-client)
	$(quiet) AR $@
	$(Q)mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(O)/lib/libvelo.a: $(objs-client)
	$(quiet) AR $@
	$(Q)mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

define prog-rule
$(O)/bin/$(1): $$(objs-prog-$(1)) $(O)/lib/libvelo-core.a
	$$(quiet) LD $$@
	$$(Q)mkdir -p $$(dir $$@)
	$$(Q)$$(CC) $$(cflags-common) $$(ldflags-common) -o $$@ $$(objs-prog-$(1)) $(O)/lib/libvelo-core.a $$(ldlibs)
endef
$(foreach p,$(progs),$(eval $(call prog-rule,$(p))))

# Unit tests: tests/unit/test_x.c -> build/tests/unit/test_x, with the
# shared test helpers (testlib-y) from an archive: a test links only what
# it uses.
$(O)/lib/libvelo-test.a: $(objs-testlib)
	$(quiet) AR $@
	$(Q)mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^
$(tests): %: %.o $(O)/lib/libvelo-test.a $(O)/lib/libvelo-core.a
	$(quiet) LD $@
	$(Q)$(CC) $(cflags-common) $(ldflags-common) -o $@ $< $(O)/lib/libvelo-test.a \
		$(O)/lib/libvelo-core.a $(ldlibs) -lcmocka

# libFuzzer targets are built with clang, ASan and UBSan, from their own
# objects under build/fuzz/.
fuzz-cflags := $(filter-out -march=% -mtune=% -fsanitize=%,$(cflags-common)) \
	-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -DVELO_FUZZ=1
# Objects not compiled from C (the CUDA fatbin's .S) are linked as built.
fuzz-objs := $(foreach o,$(objs-core) $(objs-client),$(if $(wildcard \
	$(patsubst $(O)/%.o,%.c,$(o))),$(patsubst $(O)/%,$(O)/fuzz/%,$(o)),$(o)))
$(O)/fuzz/%.o: %.c | $(O)/include/config/auto.conf
	$(quiet) CLANG $<
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CLANG) $(fuzz-cflags) $(ccflags-dir-$(dir $<)) -Wno-unknown-warning-option \
		-MMD -MP -c -o $@ $<
$(O)/fuzz/lib/libvelo-core.a: $(fuzz-objs)
	$(Q)mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^
$(fuzzers): %: %.o $(O)/fuzz/lib/libvelo-core.a
	$(quiet) LD $@
	$(Q)$(CLANG) -fsanitize=fuzzer,address,undefined -o $@ $< $(O)/fuzz/lib/libvelo-core.a $(ldlibs)

-include $(shell find $(O) -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------------------
# Running and testing.
FUZZ_SECONDS ?= 10

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(srctree)/tools/build/run.sh $(O)

# Every stage runs even when an earlier one failed; the summary decides.
check: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)rm -f $(O)/results/*.log
	-$(Q)$(MAKE) --no-print-directory check-unit
	-$(Q)$(MAKE) --no-print-directory check-fuzz
	-$(Q)$(MAKE) --no-print-directory check-integration
	$(Q)$(srctree)/tests/summary.sh $(O)

# Each stage keeps its log under $(O)/results/ and ends with a line
# "<stage>: N passed, M failed" that tests/summary.sh adds up.
check-unit: all
	$(Q)mkdir -p $(O)/results
	$(Q)set -o pipefail; $(srctree)/tests/run-unit.sh $(O) $(tests) | tee $(O)/results/unit.log

check-fuzz: $(fuzzers)
	$(Q)mkdir -p $(O)/results
	$(Q)set -o pipefail; $(srctree)/tests/run-fuzz.sh $(O) $(FUZZ_SECONDS) $(fuzzers) | tee $(O)/results/fuzz.log

fuzz: FUZZ_SECONDS = 600
fuzz: check-fuzz

check-integration: all
	$(Q)mkdir -p $(O)/results
	$(Q)set -o pipefail; $(srctree)/tests/run-integration.sh $(O) | tee $(O)/results/integration.log

bench-proto: all
	$(Q)$(srctree)/tools/bench/bench-proto.sh $(O)

# CPU engine: prefill/decode tok/s of a synthetic ~100M model in BF16, FP8,
# INT4 and the share of the copy bandwidth measured in the same run.
.PHONY: bench-engine
bench-engine: all
	$(Q)mkdir -p $(O)/results
	$(Q)cd $(srctree) && $(abspath $(O))/bin/velo-bench-engine \
		--json $(abspath $(O))/results/bench-engine.json $(BENCH_ENGINE_ARGS)

# GPU engine (issue #6), on the GPU machine: synthetic Llama-3.1-8B images
# in FP8 and INT4, velo-bench-gpu on each (CUDA backend), the PyTorch
# baseline (tools/bench/hf_baseline.py), one table with the ratios
# (tools/bench/gpu/run-bench-gpu.sh; results in $(O)/results/bench-gpu).
.PHONY: bench-gpu
bench-gpu: all
	$(Q)$(srctree)/tools/bench/gpu/run-bench-gpu.sh $(O)

# Appliance image (docs/image.md): kernel, initramfs, manifest and QEMU boot
# script under $(O)/images/$(CONFIG_IMAGE_NAME)/, e.g.
# make O=build-img qemu_defconfig && make O=build-img image check-image
.PHONY: image check-image
# Host tools the image recipe and its QEMU test use (the kernel, busybox and
# dropbear inside the image are fetched with apt-get download, not installed).
deps-image := qemu-system-x86 cpio kmod openssh-client python3
image: all
	$(Q)$(srctree)/tools/build/deps.sh $(deps-image)
	$(Q)$(srctree)/images/mkimage.sh $(O)

check-image: image
	$(Q)mkdir -p $(O)/results
	$(Q)set -o pipefail; $(srctree)/tests/image/run.sh $(O) | tee $(O)/results/image.log

clean:
	$(Q)rm -rf $(O)/bin $(O)/lib $(O)/fuzz $(O)/tests $(O)/results \
		$(filter-out $(O)/include $(O)/.config,$(wildcard $(O)/*))

distclean:
	$(Q)rm -rf $(O)

help:
	@echo 'velo make targets:'
	@echo '  all (default)     build the configured programs, libraries and tests'
	@echo '  run               install packages, build, start velod on loopback'
	@echo '  check             install packages, build, run every test (CI)'
	@echo '  fuzz              run each libFuzzer target for 10 minutes'
	@echo '  bench-proto       protocol decode+auth throughput, PING round trip'
	@echo '  bench-engine      CPU engine prefill/decode tok/s, share of memory bandwidth'
	@echo '  bench-dpdk        socket / af_packet / af_xdp round trips, packets/s per lcore'
	@echo '  check-gpu         (GPU machine) CUDA backend parity vs CPU and HF, scheduler tests'
	@echo '  bench-gpu         (GPU machine) 8B FP8/INT4 decode, TTFT, streams vs HF baseline'
	@echo '  gpu-tests         build the GPU test programs here (to carry to the GPU machine)'
	@echo '  image             kernel + initramfs + QEMU script of the config (images/)'
	@echo '  check-image       boot the qemu_defconfig image in QEMU and test it'
	@echo '  deps              install the Debian packages the config needs'
	@echo '  defconfig         default configuration (development machine)'
	@echo '  <name>_defconfig  configuration from images/<name>_defconfig'
	@echo '  menuconfig olddefconfig savedefconfig'
	@echo '  clean distclean   V=1 shows full commands; O=dir builds elsewhere'

# bench-dpdk: the DPDK transports (net_af_packet, net_af_xdp) beside the
# kernel socket on one veth pair, and velo-bench-dp (packets/s per
# dataplane lcore); root only; docs/perf.md quotes it.
.PHONY: bench-dpdk
bench-dpdk: all
	$(Q)BENCH_REQUESTS=$${BENCH_REQUESTS:-10000} BENCH_DP_SECONDS=$${BENCH_DP_SECONDS:-0.5} \
		O=$(abspath $(O)) SRC=$(srctree) bash $(srctree)/tests/integration/t-dpdk-bench.sh
