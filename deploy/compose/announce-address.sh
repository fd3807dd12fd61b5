#!/bin/sh
# Run by the nginx image's entrypoint (/docker-entrypoint.d) when the load
# balancer of docker-compose.yml starts: tells `docker compose up` where to look.
echo "Pulse is up: open ${PULSE_PUBLIC_URL:-http://localhost:8080}"
