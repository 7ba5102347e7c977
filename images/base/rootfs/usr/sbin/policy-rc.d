#!/bin/sh
# No init system in a node container: packages must not try to start their
# services at install time. Each image's rangectl-init starts what it needs.
exit 101
