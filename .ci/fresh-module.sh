#!/usr/bin/env bash
# Uses bgpool from this checkout in fresh modules outside the tree, as the
# README's "Install" section tells a new user to, and fails if `go mod tidy`
# (or the README's `go get` lines) rewrote the fresh go.mod's `go` line, or if
# the build fails:
#   - a module on go 1.25.0 with replace lines for the root module and for
#     the contrib modules that state Go 1.25 (prometheus, gin, echo, redis),
#     after the pinned `go get` lines of the README's "Install" section;
#   - a module on go 1.26.0 with replace lines for the root and contrib/river
#     (River needs Go 1.26);
#   - a module on go 1.25.0 that takes bgpool and contrib/prometheus from a
#     go.work beside it, with no require or replace line for them.
# The pins must also be the versions the contrib modules' go.mod files
# require, and the contrib READMEs' own `go get` lines must agree with them.
# Needs the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

fail() { echo "FAIL: $*"; exit 1; }

# quiet LOG CMD...: runs CMD with its output in LOG, shown only if it fails.
quiet() {
	local log=$1
	shift
	"$@" >"$log" 2>&1 || { cat "$log"; return 1; }
}

# The pinned `go get module@version` lines of the README's "Install" section.
pins=()
while IFS= read -r spec; do pins+=("$spec"); done < <(
	awk '/^## /{inside = ($0 == "## Install")} inside && /^go get [^ ]+@v[^ ]+$/ {print $3}' README.md
)
[[ ${#pins[@]} -gt 0 ]] || fail "README.md's Install section pins no version (go get module@version)"
echo "pins from README.md's Install section: ${pins[*]}"

for spec in "${pins[@]}"; do
	mod=${spec%@*} version=${spec#*@}
	grep -Eq "^[[:space:]]*(require[[:space:]]+)?${mod//./\\.} ${version//./\\.}([[:space:]]|$)" contrib/*/go.mod ||
		fail "README.md pins $spec, but no contrib module's go.mod requires $mod $version"
done
for readme in contrib/prometheus/README.md contrib/gin/README.md contrib/echo/README.md; do
	[[ -f "$readme" ]] || fail "$readme is missing"
	while IFS= read -r spec; do
		printf '%s\n' "${pins[@]}" | grep -qxF "$spec" ||
			fail "$readme says go get $spec, which README.md's Install section does not pin"
	done < <(awk '/^go get [^ ]+@v[^ ]+$/ {print $3}' "$readme")
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case "$work/" in "$repo"/*) fail "the temporary directory $work is inside the checkout" ;; esac

go_line() { grep -E '^go ' "$1/go.mod"; }
# same_go_line DIR WANT STEP: the go line of DIR/go.mod is still WANT after STEP.
same_go_line() {
	local got
	got=$(go_line "$1")
	[[ "$got" == "$2" ]] || fail "$3 rewrote the go line of the fresh $1/go.mod: was \"$2\", now \"$got\""
	! grep -Eq '^toolchain ' "$1/go.mod" || fail "$3 added a toolchain line to the fresh $1/go.mod: $(grep -E '^toolchain ' "$1/go.mod")"
}

# fresh_module DIR GOLINE: a module example.com/NAME with go GOLINE and no requirement.
fresh_module() {
	mkdir -p "$1"
	printf 'module example.com/%s\n\ngo %s\n' "$(basename "$1")" "$2" >"$1/go.mod"
}

# tidy_and_build DIR CONTRIB...: replace lines for the root module and each
# contrib module, the README's pins if any, go mod tidy, go build.
tidy_and_build() {
	local dir=$1 before
	shift
	before=$(go_line "$dir")
	(
		cd "$dir"
		export GOFLAGS=-mod=mod GOWORK=off
		go mod edit -replace "github.com/bgpool/bgpool=$repo"
		for c in "$@"; do
			go mod edit -replace "github.com/bgpool/bgpool/contrib/$c=$repo/contrib/$c"
		done
		for spec in ${PINS:-}; do
			quiet "$dir.log" go get "$spec" || fail "go get $spec in the fresh module $dir"
		done
	)
	same_go_line "$dir" "$before" "go get ${PINS:-(no pins)}"
	(cd "$dir" && GOFLAGS=-mod=mod GOWORK=off quiet "$dir.log" go mod tidy) || fail "go mod tidy in the fresh module $dir"
	same_go_line "$dir" "$before" "go mod tidy"
	(cd "$dir" && GOFLAGS=-mod=mod GOWORK=off quiet "$dir.log" go build -o /dev/null ./...) || fail "go build in the fresh module $dir"
	echo "$dir: $(go_line "$dir") kept by go mod tidy; go build passed; it resolved:"
	(cd "$dir" && GOWORK=off go list -m all | grep -E '^github.com/(bgpool|prometheus/client_golang |gin-gonic/gin |labstack/echo/v4 |redis/go-redis/v9 |riverqueue/river |jackc/pgx/v5 )' | sed 's/^/  /')
}

echo "== fresh module on go 1.25.0: bgpool and contrib prometheus, gin, echo, redis through replace lines"
svc="$work/svc125"
fresh_module "$svc" 1.25.0
cat >"$svc/main.go" <<'EOF'
// Command svc125 wires every Go 1.25 contrib module of bgpool into one
// service, as a user would; it is built, not run.
package main

import (
	"log"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/bgpool/bgpool"
	bgecho "github.com/bgpool/bgpool/contrib/echo"
	bggin "github.com/bgpool/bgpool/contrib/gin"
	bgprom "github.com/bgpool/bgpool/contrib/prometheus"
	bgredis "github.com/bgpool/bgpool/contrib/redis"
)

func main() {
	c, err := bgprom.New("mail")
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	p, err := bgpool.New(8,
		bgpool.WithObserver(c.Observe),
		bgpool.WithLimiter(bgredis.NewLimiter(rdb, "mail", redis_rate.PerSecond(100))))
	if err != nil {
		log.Fatal(err)
	}
	c.Watch(p)
	prometheus.MustRegister(c)

	r := gin.New()
	r.Use(bggin.Middleware(p))
	e := echo.New()
	e.Use(bgecho.Middleware(p))
	_, _ = bggin.Go, bgecho.Go

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.Handle("/gin/", r)
	mux.Handle("/echo/", e)
	mux.Handle("/", bgpool.Middleware(p)(http.NotFoundHandler()))
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", mux))
}
EOF
PINS="${pins[*]}" tidy_and_build "$svc" prometheus gin echo redis

echo "== fresh module on go 1.26.0: bgpool and contrib/river through replace lines"
svc="$work/svc126"
fresh_module "$svc" 1.26.0
cat >"$svc/main.go" <<'EOF'
// Command svc126 wires contrib/river into a service; it is built, not run.
package main

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/bgpool/bgpool"
	bgriver "github.com/bgpool/bgpool/contrib/river"
)

func main() {
	db, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	client, err := river.NewClient(riverpgxv5.New(db), &river.Config{})
	if err != nil {
		log.Fatal(err)
	}
	p, err := bgpool.New(8, bgpool.WithPolicy(bgpool.Spill), bgpool.WithHandoff(bgriver.NewHandoff(client, nil)))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Shutdown(context.Background())
}
EOF
PINS="" tidy_and_build "$svc" river

echo "== fresh module on go 1.25.0 in a go.work with the checkout: bgpool and contrib/prometheus"
mkdir -p "$work/ws"
svc="$work/ws/svcwork"
fresh_module "$svc" 1.25.0
cat >"$svc/main.go" <<'EOF'
// Command svcwork takes bgpool from a go.work; it is built, not run.
package main

import (
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bgpool/bgpool"
	bgprom "github.com/bgpool/bgpool/contrib/prometheus"
)

func main() {
	c, err := bgprom.New("mail")
	if err != nil {
		log.Fatal(err)
	}
	p, err := bgpool.New(8, bgpool.WithObserver(c.Observe))
	if err != nil {
		log.Fatal(err)
	}
	c.Watch(p)
	prometheus.MustRegister(c)
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", promhttp.Handler()))
}
EOF
(cd "$work/ws" && GOFLAGS= go work init ./svcwork "$repo" "$repo/contrib/prometheus")
(cd "$svc" && GOFLAGS= quiet "$svc.log" go build -o /dev/null ./...) || fail "go build in the workspace module $svc"
same_go_line "$svc" "go 1.25.0" "go build in a workspace"
echo "$svc: go build passed in a workspace ($(grep -E '^go ' "$work/ws/go.work") in go.work); its go.mod still says $(go_line "$svc")"

echo "fresh modules: all passed"
