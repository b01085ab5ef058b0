#!/usr/bin/env bash
# Writes a file to stdout one byte per write, the worst split a socket can deliver.
export LC_ALL=C
while IFS= read -r -d '' -n 1 byte; do
    if [ -z "$byte" ]; then printf '\0'; else printf '%s' "$byte"; fi
done < "$1"
