#!/usr/bin/env bash
# Run a command as the terminal's foreground job, the way an interactive shell does, so that
# Ctrl-C reaches that command only: honcho stops web, worker and beat, and make (which would
# otherwise get the same SIGINT and end with "Interrupt" or "Error 130") just sees it finish.
# Without a terminal (CI, pipes) the command simply runs.
set -u
if [ -t 0 ]; then
  set -m  # job control: the command gets its own process group and the terminal
  "$@" &
  fg %1 >/dev/null
  status=$?
else
  "$@"
  status=$?
fi
# 130 is honcho after SIGINT: the way a local run is meant to end.
if [ "$status" -eq 130 ]; then
  echo "stopped"
  exit 0
fi
exit "$status"
