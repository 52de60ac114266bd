-- FTPS and email connections (issue 14): two more kinds beside SFTP.

ALTER TABLE connections DROP CONSTRAINT connections_kind_check;
ALTER TABLE connections ADD CONSTRAINT connections_kind_check
    CHECK (kind IN ('sftp', 'ftps', 'email'));

-- An email connection's recipients. Only an approved one ever receives referral data:
-- adding makes it pending (it gets a confirmation message with a signed link and nothing
-- else); approval is that click or an operator; revocation by the account or an operator.
CREATE TABLE recipients (
    id             uuid PRIMARY KEY,
    connection_id  uuid NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    account_id     uuid NOT NULL REFERENCES accounts (id),
    address        text NOT NULL CHECK (length(address) BETWEEN 3 AND 254),
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'approved', 'revoked')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    changed_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recipients_address_key UNIQUE (connection_id, address)
);

-- Who changed a recipient's state, when and how (append-only).
CREATE TABLE recipient_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient_id  uuid NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    state         text NOT NULL CHECK (state IN ('pending', 'approved', 'revoked')),
    -- link: the recipient clicked the signed link; operator / account: a credential.
    how           text NOT NULL CHECK (how IN ('link', 'operator', 'account')),
    actor         text NOT NULL,  -- a credential id, or the address for a link
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recipient_events_recipient ON recipient_events (recipient_id, at);

-- Each recipient's outcome of one delivery: accepted, or permanently failed (a 5xx).
-- A retry sends only to approved recipients without a row here, so nobody who accepted
-- a delivery gets it twice because another address bounced.
CREATE TABLE delivery_recipients (
    delivery_id   uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    recipient_id  uuid NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    address       text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('accepted', 'failed')),
    message_id    text NOT NULL,
    detail        text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, recipient_id)
);
