#!/usr/bin/env bash
# Install stagebox with its man pages and shell completions (a `make install` for this crate).
#
#   scripts/install.sh                  # into /usr/local (as root) or ~/.local
#   PREFIX=/opt/sb scripts/install.sh   # elsewhere; DESTDIR=... for packaging
#   STAGEBOX=path/to/stagebox scripts/install.sh   # an already built binary
#
# Writes PREFIX/bin/stagebox, PREFIX/share/man/man1/stagebox*.1 and the bash, zsh and fish
# completions under PREFIX/share (where bash-completion, zsh's site-functions and fish's
# vendor_completions.d look when PREFIX is /usr/local or /usr).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PREFIX:-}" ]; then
  if [ "$(id -u)" = 0 ]; then PREFIX=/usr/local; else PREFIX="$HOME/.local"; fi
fi
root="${DESTDIR:-}$PREFIX"
bin="${STAGEBOX:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked
  bin=target/release/stagebox
fi
install -Dm755 "$bin" "$root/bin/stagebox"
mkdir -p "$root/share/man/man1"
"$bin" man --dir "$root/share/man/man1"
chmod 644 "$root"/share/man/man1/stagebox*.1
comp() { # SHELL DEST
  mkdir -p "$(dirname "$root/$2")"
  "$bin" completions "$1" > "$root/$2"
  chmod 644 "$root/$2"
}
comp bash share/bash-completion/completions/stagebox
comp zsh share/zsh/site-functions/_stagebox
comp fish share/fish/vendor_completions.d/stagebox.fish
echo "installed stagebox, its man pages and bash/zsh/fish completions under $root" >&2
