-- Concurrency slots per vendor API key across every delivery replica (see
-- services/delivery/key_slots.py). Loaded by services/delivery/key_slots.py.

-- name: key_slots_ensure
-- The key's slots 1..$2 exist (a smaller limit later simply leaves the higher ones unused).
INSERT INTO vendor_key_slots (key_digest, slot)
SELECT $1, s FROM generate_series(1, $2::int) AS s
ON CONFLICT (key_digest, slot) DO NOTHING;

-- name: key_slot_take
-- One free slot of the key among 1..$3 (never held, released, or lapsed), taken by $2
-- until $4 seconds from now; no row when all are held.
WITH free AS (
    SELECT slot FROM vendor_key_slots
     WHERE key_digest = $1 AND slot <= $3 AND (lease_until IS NULL OR lease_until < now())
     ORDER BY slot
     LIMIT 1
       FOR UPDATE SKIP LOCKED
)
UPDATE vendor_key_slots s
   SET holder = $2, lease_until = now() + make_interval(secs => $4)
  FROM free
 WHERE s.key_digest = $1 AND s.slot = free.slot
RETURNING s.slot;

-- name: key_slots_renew
-- Renew the slots $3 that $2 still holds; returns those (a lapsed one is lost).
UPDATE vendor_key_slots
   SET lease_until = now() + make_interval(secs => $4)
 WHERE key_digest = $1 AND holder = $2 AND slot = ANY ($3::int[]) AND lease_until > now()
RETURNING slot;

-- name: key_slots_release
-- Give slots back at once.
UPDATE vendor_key_slots SET holder = NULL, lease_until = NULL
 WHERE key_digest = $1 AND holder = $2 AND slot = ANY ($3::int[]);
