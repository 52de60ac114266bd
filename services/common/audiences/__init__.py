"""Custom audiences, shared by the export service (uploads, the API) and the scheduler
(refreshing audiences from their sources):

- `model`: what an audience is (`Audience`), the minimum of an include audience and
  `require_usable`, the refusal every use goes through.
- `lines`: a file's bytes (maybe gzip) to lines, lines to hashed `Member`s or `LineError`s.
- `store`: `AudienceStorePg`, the SQL (`sql/audiences.sql`) and the all-or-nothing import.
"""
