# SPDX-License-Identifier: GPL-2.0
# rthin: developer entry points. The module itself is built by Kbuild (see Kbuild).
#
#   make            build rthin.ko against the cached test kernel (built first if needed),
#                   or against KDIR=<a configured Rust-enabled 6.12 build tree>
#   make check      install what is needed, build, and run every test (host and guest), on
#                   the test kernel, then a share of them on the checker kernel (KASAN,
#                   kmemleak; RTHIN_CHECKER=0 leaves that out)
#   make check-long the long forms: the seed tests on upstream dm-thin, the crash replay to
#                   every flush, the fault sweep at every IO, the long fuzz run; then every
#                   suite of make check on the checker kernel
#   make soak       the soak: pools under fio with verify, snapshots, discards, reloads,
#                   drop_caches and module-reference churn, 10 minutes on rthin; options
#                   SOAK_SECS=N, FLAVOUR=test|checker, SOAK_ONLY=REGEX (rthin, dmthin, .)
#   make demo       boot the test VM, load rthin and show its targets working
#   make bench      fio on a ramdisk, dm-linear and rlinear, on a kernel without debug checkers
#   make clippy     the kernel's clippy lints over the module (CLIPPY=1)
#   make fmt        rustfmt check of every Rust file

SHELL := /bin/bash
.PHONY: all module deps kernel check check-long soak demo bench clippy fmt clean

all: module

deps:
	scripts/deps.sh

kernel: deps
	scripts/kernel.sh test >/dev/null

ifeq ($(KDIR),)
module: kernel
	scripts/module.sh test
else
module:
	KDIR=$(KDIR) scripts/module.sh test
endif

check:
	scripts/test.sh

check-long:
	scripts/test.sh --long

# (SOAK_SECS, FLAVOUR and SOAK_ONLY given on make's command line reach test.sh's environment.)
soak:
	scripts/test.sh --soak

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

clippy: kernel
	scripts/module.sh test CLIPPY=1

fmt:
	/usr/bin/rustfmt --check --edition 2021 $$(git ls-files 'rust/*.rs')

clean:
	-source scripts/lib.sh && make -C "$$(kernel_build_dir test)" M=$(CURDIR) "$${KMAKE_VARS[@]}" clean
	rm -rf results
