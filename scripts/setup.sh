#!/usr/bin/env bash
# setup.sh: installs the Debian 12 packages splitllm needs to build, test and benchmark.
#
# For: a fresh Debian 12 machine (or container). Idempotent: it asks dpkg-query which
# packages are missing and installs only those; when nothing is missing it changes nothing
# and needs no network. Not for: fetching models or datasets (scripts/assets.sh does that)
# or other distributions.
set -euo pipefail

# The one list of system dependencies, one line of justification each.
REQUIRED_PACKAGES=(
    build-essential  # C11 compiler (gcc), make, libc headers; gcc brings OpenMP (libgomp) for the parallel loops
    cmake            # the build system (CMakeLists.txt needs >= 3.25) and ctest, which runs the tests
    pkg-config       # how CMake finds OpenBLAS, cJSON, PCRE2, cmocka and libcrypto
    libopenblas-dev  # OpenBLAS: the matrix products (sgemm) of forward and backward passes
    libnng-dev       # NNG: messaging between the user, edge and cloud processes of the split runtime
    libcjson-dev     # cJSON: JSON manifests, run configs, PEFT adapter_config.json, safetensors/adapter headers
    libpcre2-dev     # PCRE2: the GPT-2 pre-tokenization regex, which needs Unicode classes (\p{L}, \p{N})
    libcmocka-dev    # cmocka: the unit-test framework of every tests/test_*.c
    libssl-dev       # OpenSSL libcrypto: SHA-256 of model parts, tokenizers and assets
    gnuplot-nox      # gnuplot without X: plots of memory, time and loss from experiment results
    python3-torch    # PyTorch: independent reference for correctness tests and the benchmark comparison
    python3-numpy    # NumPy: used with PyTorch by the reference scripts to read and write raw arrays
    curl             # scripts/assets.sh downloads an asset with it when no local mirror holds the file
    ca-certificates  # lets curl verify the HTTPS certificates of GitHub and Hugging Face
)

missing=()
for pkg in "${REQUIRED_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "setup: all ${#REQUIRED_PACKAGES[@]} required packages are installed"
    exit 0
fi

echo "setup: missing packages: ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "setup: error: not root and sudo is not available; as root run:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi

"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
echo "setup: installed ${missing[*]}"
