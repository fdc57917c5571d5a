#!/usr/bin/env bash
# Verifies that every option the fragment requests is what the final .config
# holds. Usage: check-config.sh FRAGMENT DOTCONFIG
set -euo pipefail
frag=${1:?fragment}; cfg=${2:?.config}
bad=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*)
      grep -qxF -- "$line" "$cfg" || { echo "kernel config: wanted $line, got: $(grep -E "^(# )?${line%%=*}[= ]" "$cfg" || echo unset)" >&2; bad=1; } ;;
    "# CONFIG_"*" is not set")
      opt=${line#\# }; opt=${opt%% *}
      if grep -qE "^$opt=" "$cfg"; then echo "kernel config: wanted $opt off, got: $(grep -E "^$opt=" "$cfg")" >&2; bad=1; fi ;;
  esac
done < "$frag"
[ $bad -eq 0 ] && echo "kernel config: all $(grep -cE '^CONFIG_|^# CONFIG_.* is not set' "$frag") requested options hold"
exit $bad
