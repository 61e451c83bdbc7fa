#!/usr/bin/env bash
# A walk through the embedded backbone over HTTP: tokens, cart, checkout, simulated payment,
# order history, the delivered confirmation email, support timeline and event export.
#
# Usage: scripts/walkthrough.sh [BASE_URL] [DATA_DIR]
#   BASE_URL  the running server (default http://127.0.0.1:8080)
#   DATA_DIR  the server's --data directory, used to mint tokens (default ./data)
#   BACKBONE  the backbone binary (default: target/debug/backbone, else `backbone` on PATH)
#
# Needs curl and python3 (for JSON extraction). Start the server first, for example:
#   cargo run -p api --bin backbone -- serve --data ./data
set -euo pipefail

BASE_URL="${1:-http://127.0.0.1:8080}"
DATA_DIR="${2:-./data}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${BACKBONE:-}" ]]; then
  if [[ -x "$ROOT/target/debug/backbone" ]]; then
    BACKBONE="$ROOT/target/debug/backbone"
  else
    BACKBONE="backbone"
  fi
fi

step() { printf '\n==> %s\n' "$*"; }

# json EXPR: evaluates a Python expression over the JSON document on stdin, bound to `d`.
json() { python3 -c 'import json, sys; d = json.load(sys.stdin); v = eval(sys.argv[1]); print(v if isinstance(v, str) else json.dumps(v))' "$1"; }

# api METHOD PATH TOKEN [BODY]: prints the response body; fails on an HTTP error.
api() {
  local method="$1" path="$2" token="$3" body="${4:-}"
  local out status
  out="$(mktemp)"
  if [[ -n "$body" ]]; then
    status="$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$BASE_URL$path" \
      -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$body")"
  else
    status="$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$BASE_URL$path" \
      -H "Authorization: Bearer $token")"
  fi
  if [[ "$status" -ge 400 ]]; then
    echo "$method $path answered $status: $(cat "$out")" >&2
    rm -f "$out"
    return 1
  fi
  cat "$out"
  rm -f "$out"
}

step "waiting for $BASE_URL/readyz"
for _ in $(seq 1 100); do
  if curl -sf "$BASE_URL/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -sf "$BASE_URL/readyz" | json 'd["status"]'

step "minting tokens with $BACKBONE token"
CUSTOMER="$("$BACKBONE" token --sub alice --role customer --data "$DATA_DIR")"
SUPPORT="$("$BACKBONE" token --sub sam --role support --data "$DATA_DIR")"
ANALYST="$("$BACKBONE" token --sub ana --role analyst --data "$DATA_DIR")"
echo "customer token: ${CUSTOMER:0:24}..."

step "browsing the coffee catalog"
api GET "/v1/catalog/products?category=coffee" "$CUSTOMER" \
  | json '"\n".join(p["product_id"] + ": " + p["name"] + " " + p["price"]["amount"] + " " + p["price"]["currency"] + " (" + str(p["available"]) + " available)" for p in d["products"])'

step "opening a cart and adding 2 x prd_espresso"
CART_ID="$(api POST /v1/carts "$CUSTOMER" '{}' | json 'd["cart_id"]')"
echo "cart: $CART_ID"
api POST "/v1/carts/$CART_ID/items" "$CUSTOMER" '{"product_id": "prd_espresso", "quantity": 2}' \
  | json '"total " + d["total"]["amount"] + " " + d["total"]["currency"]'

step "checking out"
CHECKOUT="$(api POST "/v1/carts/$CART_ID/checkout" "$CUSTOMER" \
  '{"email": "alice@example.com", "shipping_address": {"name": "Alice Liddell", "line1": "1 Rabbit Hole", "city": "Oxford", "postal_code": "OX1 1AA", "country": "GB"}}')"
ORDER_ID="$(echo "$CHECKOUT" | json 'd["order_id"]')"
PAYMENT_ID="$(echo "$CHECKOUT" | json 'd["payment_id"]')"
echo "order $ORDER_ID, payment $PAYMENT_ID, status $(echo "$CHECKOUT" | json 'd["status"]')"

step "paying with the simulated card pm_card_visa"
PAID="$(api POST "/v1/payments/$PAYMENT_ID/confirm" "$CUSTOMER" '{"payment_method": "pm_card_visa"}')"
TOKEN="$(echo "$PAID" | json 'd["consistency"]')"
echo "payment $(echo "$PAID" | json 'd["status"]'), consistency token $TOKEN"

step "waiting for the order to be paid (read-your-writes with the consistency token)"
STATUS=""
for _ in $(seq 1 50); do
  STATUS="$(api GET "/v1/orders/$ORDER_ID?consistency=$TOKEN" "$CUSTOMER" | json 'd["status"]')"
  [[ "$STATUS" == "paid" ]] && break
  sleep 0.2
done
echo "order status: $STATUS"
[[ "$STATUS" == "paid" ]]

step "order history"
api GET /v1/orders "$CUSTOMER" \
  | json '"\n".join(o["order_id"] + " " + o["status"] + " " + o["total"]["amount"] + " " + o["total"]["currency"] for o in d["orders"])'

step "notifications: the confirmation is delivered to the outbox (the file channel)"
NOTE=""
for _ in $(seq 1 50); do
  NOTE="$(api GET /v1/me/notifications "$CUSTOMER" \
    | json 'next((n["notification_id"] + " " + n["kind"] + ": " + n["subject"] for n in d["notifications"] if n["kind"] == "order_confirmed" and n["delivery_status"] == "delivered"), "")')"
  [[ -n "$NOTE" ]] && break
  sleep 0.2
done
echo "delivered: ${NOTE#* }"
[[ -n "$NOTE" ]]
EML="$DATA_DIR/outbox/${NOTE%% *}.eml"
echo "the email: $EML"
grep -E '^(Message-ID|From|To|Subject):' "$EML"

step "support: the order's timeline"
api GET "/v1/support/orders/$ORDER_ID/timeline" "$SUPPORT" \
  | json '"\n".join(e["at"] + " [" + e["source"] + "] " + e["summary"] for e in d["entries"])'

step "analyst: exporting the event history (NDJSON)"
EXPORT="$(api GET "/v1/events" "$ANALYST")"
echo "$EXPORT" | head -n 3 | cut -c1-160
echo "... $(echo "$EXPORT" | grep -c . ) events exported"

step "walkthrough finished: order $ORDER_ID is paid"
