# Sourced by the stage scripts. Injects transient network-style failures, reproducibly: a hash
# of stage, item and attempt decides, so a retry (a new attempt) may pass where the first failed.
# MIGRATIONPILOT_CHAOS is the failure rate in percent (default 20; 0 turns chaos off).
chaos() {
    rate=${MIGRATIONPILOT_CHAOS:-20}
    [ "$rate" -gt 0 ] || return 0
    hash=$(printf '%s:%s:%s' "$MIGRATIONPILOT_STAGE" "$1" "${MIGRATIONPILOT_ATTEMPT:-1}" | cksum | cut -d' ' -f1)
    if [ $((hash % 100)) -lt "$rate" ]; then
        if [ $((hash % 2)) -eq 0 ]; then
            echo "analysis service: connect ECONNRESET (injected by chaos)" >&2
        else
            echo "analysis service: read ETIMEDOUT (injected by chaos)" >&2
        fi
        exit 75
    fi
}
