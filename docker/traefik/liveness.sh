#!/bin/sh
# The gateway's healthcheck (compose.yaml), and its liveness rule.
#
# Healthy: Traefik's ping answers within 2 s (asked once more on a miss).
#
# A Traefik that has answered before and now misses twice is stuck: on a
# machine short of memory it can spend its time reading its own code back in
# and never drain its backlog, and Docker restarts a container that exits,
# never one that is merely unhealthy. So this kills it; the container exits
# (init: true, Traefik is not PID 1) and its restart policy starts it again.
# Before its first answer (a slow start) a miss only counts as unhealthy.
# (timeout, not wget -T: some busybox builds crash on -T.)
ping() { timeout 2 wget -q -O /dev/null http://127.0.0.1:8080/ping; }
if ping || ping; then
	touch /tmp/answered
	exit 0
fi
if [ -e /tmp/answered ]; then
	echo "liveness: ping missed twice; killing traefik so that Docker restarts it"
	kill -KILL $(pidof traefik)
fi
exit 1
