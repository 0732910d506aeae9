#!/bin/sh
# An `external` probe program (see docs/config.md, type = "external"): trioprobe runs it as
#   external_check.sh HOST PORT
# with no shell in between. Exit status 0 means success; `name value` lines on standard output
# become metrics (gauges, or counters when listed in the probe's `counters`), and
# `name map:KEY k1:v1 k2:v2` lines become maps.
host="$1"
port="$2"
echo "checked_port $port"
echo "runs 1"
echo "result map:outcome ok:1"
# Free text is ignored; a non-zero exit (with a reason on stderr) fails the probe.
echo "checked $host"
