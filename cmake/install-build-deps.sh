#!/usr/bin/env bash
# Installs what the C++ build needs when it is missing: cmake (Debian: cmake) and GoogleTest (Debian:
# libgtest-dev, from the googletest source package). Uses apt-get (through sudo when not root).
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
[ -f /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake ] || [ -f /usr/lib/cmake/GTest/GTestConfig.cmake ] ||
  [ -n "$(find /usr/lib /usr/local/lib -path '*cmake/GTest/GTestConfig.cmake' -print -quit 2>/dev/null)" ] ||
  missing+=(libgtest-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing ${missing[*]} and no apt-get: install them and rerun" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing ${missing[*]} (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
