-- FTPS and email connections (issue 14): two more kinds beside SFTP.

ALTER TABLE connections DROP CONSTRAINT connections_kind_check;
ALTER TABLE connections ADD CONSTRAINT connections_kind_check
    CHECK (kind IN ('sftp', 'ftps', 'email'));
