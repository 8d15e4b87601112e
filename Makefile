# Thin wrappers over scripts/, which do the real work (and run as root).
.PHONY: build image deb test test-matrix test-stack test-vm engines bench bench-scale bench-ipam-sim soak run vet fmt fuzz screenshot

build:
	./scripts/build.sh

# The image underlay:VERSION in the local dockerd and dist/underlay_VERSION_image.tar.
image: build
	./scripts/build-image.sh --save

# dist/underlay_VERSION_amd64.deb
deb: build
	./scripts/build-deb.sh

test:
	./scripts/test.sh

# Every suite against Docker 20.10, 28 and 29 (engines built on first use).
test-matrix:
	./scripts/test-matrix.sh

# Builds and caches dockerd 28 and 29 under /opt/underlay/engines.
engines:
	./scripts/build-engines.sh

# The registration, network and autoscaler lab tests with the agents
# deployed by deploy/stack.yml (the fault tests kill and restart plain agents).
test-stack:
	UNDERLAY_LAB_AGENTS=stack UNDERLAY_TEST_ENGINES= ./scripts/test.sh -run 'TestIntegrationLab$$|TestIntegrationLabNetwork|TestIntegrationLabAutoscaler|TestIntegrationStack'

# Only the tests on VM lab nodes (Debian's kernel: VLANs, bonds, ipvlan; the
# package installed, rebooted and removed on a node booting systemd).
test-vm:
	UNDERLAY_VM_TESTS=all UNDERLAY_TEST_ENGINES= ./scripts/test.sh -run '^TestIntegrationVM'

bench:
	./scripts/bench.sh

# Issue 14's scale table: a lab of each size in BENCH_SCALE_NODES, a burst
# of each count in BENCH_SCALE_TASKS on it (bursts that would not fit in
# memory are reported, not run). `make bench` runs 3 nodes, 100 tasks.
BENCH_SCALE_NODES ?= 3 6 10
BENCH_SCALE_TASKS ?= 100 500 1000
bench-scale:
	BENCH_SCALE_NODES="$(BENCH_SCALE_NODES)" BENCH_SCALE_TASKS="$(BENCH_SCALE_TASKS)" ./scripts/bench-scale.sh scale

# The cluster IPAM of BENCH_IPAM_SIM_NODES simulated nodes against one
# Consul server: lost check-and-sets, writes, allocation latency. `make
# bench` runs 100 nodes.
BENCH_IPAM_SIM_NODES ?= 100 300 1000
bench-ipam-sim:
	BENCH_IPAM_SIM_NODES="$(BENCH_IPAM_SIM_NODES)" ./scripts/bench-scale.sh ipam-sim

# The chaos run: 5 nodes (2 managers), 30 minutes of faults while services
# scale, from a fresh seed (SOAK_SEED=N replays a run; SOAK_NODES,
# SOAK_MANAGERS, SOAK_DURATION change it). CI runs a short one.
soak:
	./scripts/soak.sh

# Every fuzz target for FUZZTIME each (default here 2m; CI uses a short one).
FUZZTIME ?= 2m
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

run:
	./scripts/run.sh

vet:
	go vet ./...
	test -z "$$(gofmt -l .)"

# docs/dashboard.png: the dashboard of run.sh's lab (LAB=name for another),
# in headless Chromium.
LAB ?= lab
screenshot:
	go run ./test/screenshot -lab $(LAB) -out docs/dashboard.png
