# Thin wrapper over the project's scripts (meson underneath). See README.md.
.PHONY: run check setup clean

run:
	bash scripts/run.sh

check:
	bash scripts/check.sh

setup:
	bash scripts/setup-host.sh

clean:
	rm -rf build build-tsan build-asan build-qemu-backend
