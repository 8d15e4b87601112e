# Thin wrappers over scripts/, which do the real work (and run as root).
.PHONY: build image deb test test-matrix test-stack test-vm engines bench run vet fmt fuzz screenshot

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
	UNDERLAY_TEST_ENGINES= ./scripts/test.sh -run '^TestIntegrationVM'

bench:
	./scripts/bench.sh

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
