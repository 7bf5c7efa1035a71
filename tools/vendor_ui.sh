#!/usr/bin/env bash
# Re-fetch the JavaScript libraries the web UI ships with (src/veml/server/ui/static/vendor/).
#
# Not run at install or test time: the files are committed.  Run it by hand to re-create or
# audit them; it needs npm and network access to registry.npmjs.org.  Versions are pinned here
# and every file is checked against the sha256 recorded below (and in VENDOR.md) before it is
# copied, so a changed upstream tarball fails loudly instead of slipping in.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$HERE/src/veml/server/ui/static/vendor"

# package@version  file-in-tarball  vendored-name  sha256
FILES=(
  "cytoscape@3.35.0 package/dist/cytoscape.min.js cytoscape.min.js 71fa9ebec21a7ca2c40cff6aacc30d1f6464e363662ad4b2c197e1adc770cd94"
  "cytoscape@3.35.0 package/LICENSE cytoscape.LICENSE -"
  "chart.js@4.6.1 package/dist/chart.umd.min.js chart.umd.min.js 87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"
  "chart.js@4.6.1 package/LICENSE.md chart.js.LICENSE.md -"
)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"

for entry in "${FILES[@]}"; do
  read -r spec inner name sum <<<"$entry"
  pkgdir="$WORK/${spec//[@\/]/_}"
  if [ ! -d "$pkgdir" ]; then
    mkdir -p "$pkgdir"
    (cd "$pkgdir" && npm pack --silent "$spec" >/dev/null && tar xzf ./*.tgz)
  fi
  src="$pkgdir/$inner"
  if [ "$sum" != "-" ]; then
    got="$(sha256sum "$src" | cut -d' ' -f1)"
    if [ "$got" != "$sum" ]; then
      echo "error: $spec $inner has sha256 $got, expected $sum" >&2
      exit 1
    fi
  fi
  cp "$src" "$DEST/$name"
  echo "vendored $spec $inner -> $name"
done
