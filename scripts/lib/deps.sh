# shellcheck shell=bash
# Sourced by scripts/run, scripts/test and scripts/bench: makes sure the host has what the
# harness needs. As root it installs what is missing (saying so); otherwise it
# prints the exact command to run and exits 1.

HARNESS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export HARNESS_ROOT

deps_say() { echo "deps: $*" >&2; }

deps_packages() {
    grep -v '^[[:space:]]*\(#\|$\)' "$HARNESS_ROOT/scripts/lib/packages.txt"
}

deps_missing_packages() {
    local p
    for p in $(deps_packages); do
        if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: .* installed'; then
            echo "$p"
        fi
    done
}

deps_check_packages() {
    if ! command -v dpkg >/dev/null 2>&1; then
        deps_say "dpkg not found: not a Debian-like host; make sure these are installed: $(deps_packages | tr '\n' ' ')"
        return 0
    fi
    local missing
    missing="$(deps_missing_packages | tr '\n' ' ')"
    missing="${missing% }"
    [ -z "$missing" ] && return 0
    local cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing"
    if [ "$(id -u)" -eq 0 ]; then
        deps_say "installing missing packages: $missing"
        deps_say "running: $cmd"
        apt-get update -q >/dev/null || { deps_say "apt-get update failed"; exit 1; }
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null \
            || { deps_say "apt-get install failed"; exit 1; }
        deps_say "packages installed"
    else
        deps_say "missing packages: $missing"
        deps_say "install them with:  sudo sh -c '$cmd'"
        exit 1
    fi
}

deps_check_rust() {
    if [ -d "$HOME/.cargo/bin" ] && ! command -v cargo >/dev/null 2>&1; then
        PATH="$HOME/.cargo/bin:$PATH"
        export PATH
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        deps_say "cargo not found. Install Rust with rustup:"
        deps_say "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal"
        deps_say "  . \"\$HOME/.cargo/env\""
        exit 1
    fi
    if command -v rustup >/dev/null 2>&1; then
        # rust-toolchain.toml pins the toolchain; these calls install it with the
        # target and components if needed (no-ops when present).
        local installed
        installed="$(cd "$HARNESS_ROOT" && rustup target list --installed 2>/dev/null)"
        # x86_64-unknown-none: the kernels; x86_64-unknown-linux-musl: the static
        # programs of the Linux guest image (guest/kvmtest).
        local t
        for t in x86_64-unknown-none x86_64-unknown-linux-musl; do
            if ! grep -qx "$t" <<<"$installed"; then
                deps_say "adding rustup target $t"
                (cd "$HARNESS_ROOT" && rustup target add "$t") || exit 1
            fi
        done
        local comps
        comps="$(cd "$HARNESS_ROOT" && rustup component list --installed 2>/dev/null)"
        local c
        for c in rustfmt clippy; do
            if ! grep -q "^$c" <<<"$comps"; then
                deps_say "adding rustup component $c"
                (cd "$HARNESS_ROOT" && rustup component add "$c") || exit 1
            fi
        done
    else
        deps_say "rustup not found: make sure the x86_64-unknown-none and x86_64-unknown-linux-musl targets and rustfmt, clippy are installed"
    fi
}

# The Linux guest image is made from Debian packages fetched with
# `apt-get download` (scripts/harness/src/linux.rs), which needs apt's
# package lists; a fresh machine whose packages came preinstalled may have
# none. Not fatal: only the Linux scenarios need them, and they say so.
deps_check_apt_lists() {
    command -v apt-cache >/dev/null 2>&1 || return 0
    apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ]; then
        deps_say "apt has no package lists (needed for the Linux guest image): running apt-get update"
        apt-get update -q >/dev/null || deps_say "apt-get update failed: the Linux scenarios need a cached kernel"
    else
        deps_say "apt has no package lists; the Linux guest image needs:  sudo apt-get update"
    fi
}

deps_check_all() {
    deps_check_packages
    deps_check_apt_lists
    deps_check_rust
}
