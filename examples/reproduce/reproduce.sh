#!/bin/sh
# Reproduce a box and sign what you built: the reproducer's half of `stagebox verify-build`
# (docs/verify.md). Runs on a workstation or as one job of a CI matrix.
#
#   reproduce.sh BOX.toml KEY SIGNATURES_DIR [OUT_DIR]
#
# 1. `stagebox build --check` (two builds under different umask, TZ, locale, paths; fails
#    unless they agree byte for byte), with --locked when BOX.lock exists;
# 2. signs OUT_DIR/NAME.intoto.json (the build statement, [output.provenance]) with KEY as an
#    inline-signed OpenPGP message: `gpg --sign` when KEY is a key id, fingerprint or user id
#    in your GnuPG keyring (a hardware token works: gpg asks it), or `sq sign` when KEY is a
#    file holding a secret key;
# 3. writes the signature where the publishing layout wants it:
#    SIGNATURES_DIR/<box>/<version>/<FINGERPRINT>.sig (fingerprint of the primary key, upper
#    case), and prints that path. Publish SIGNATURES_DIR as is (a git repository, or an
#    https:// directory) and verifiers run
#    `stagebox verify-build OUT --keyring K --signatures SIGNATURES_DIR_OR_URL --quorum M`.
#
# Environment: STAGEBOX (default: stagebox), GPG (default: gpg), SQ (default: sq); extra
# arguments for the build in STAGEBOX_BUILD_ARGS (e.g. "--cache /var/cache/stagebox").
set -eu

usage() {
  echo "usage: $0 BOX.toml KEY SIGNATURES_DIR [OUT_DIR]" >&2
  exit 2
}
[ $# -ge 3 ] && [ $# -le 4 ] || usage
box=$1 key=$2 sigs=$3
out=${4:-$(dirname "$box")/out}
STAGEBOX=${STAGEBOX:-stagebox} GPG=${GPG:-gpg} SQ=${SQ:-sq}

locked=""
[ -f "${box%.toml}.lock" ] && locked="--locked"
# shellcheck disable=SC2086 # STAGEBOX_BUILD_ARGS is a list of words on purpose
"$STAGEBOX" build --check $locked ${STAGEBOX_BUILD_ARGS:-} -q --out "$out" "$box"

# Box name, version and statement file from manifest.json.
read_manifest() {
  python3 -c 'import json,sys
m = json.load(open(sys.argv[1]))
st = [o["path"] for o in m["outputs"] if o["format"] == "in-toto"]
if not st:
    sys.exit(sys.argv[1] + ": no in-toto statement: add [output.provenance] to the box file")
print(m["box"]); print(m["version"]); print(st[0])' "$1"
}
info=$(read_manifest "$out/manifest.json")
name=$(echo "$info" | sed -n 1p)
version=$(echo "$info" | sed -n 2p)
statement=$out/$(echo "$info" | sed -n 3p)

if [ -f "$key" ]; then
  fpr=$("$SQ" inspect "$key" | sed -n 's/^ *Fingerprint: *\([0-9A-Fa-f]*\)$/\1/p' | head -n 1)
else
  fpr=$("$GPG" --batch --with-colons --list-secret-keys "$key" | awk -F: '$1 == "fpr" { print $10; exit }')
fi
[ -n "$fpr" ] || { echo "$0: no secret key $key" >&2; exit 1; }
fpr=$(echo "$fpr" | tr 'a-f' 'A-F')

dest=$sigs/$name/$version
mkdir -p "$dest"
sig=$dest/$fpr.sig
rm -f "$sig.tmp"
if [ -f "$key" ]; then
  "$SQ" sign --signer-key "$key" --output "$sig.tmp" "$statement"
else
  "$GPG" --batch --yes --local-user "$fpr" --output "$sig.tmp" --sign "$statement"
fi
mv "$sig.tmp" "$sig"
echo "$sig"
