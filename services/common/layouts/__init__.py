"""The layout engine: field catalog, custom-field steps, layouts, formats, streaming render.

Pure code (no gRPC, asyncpg or aiohttp; `pg_csv` alone runs SQL), shared by delivery, export
and the scheduler:

- `model`: definitions (steps, CustomFieldSpec, LayoutSpec, OutputFormat); `codec` stores them.
- `catalog`: the fields a layout may name, and the row shape every reader produces.
- `validation`: problems of a definition before it is saved.
- `compiler.compile_layout(spec, custom_fields, RenderContext(...))`: compile once per render;
  `.row_fields` tells a reader which fields to fetch, `.problems` collects bad values.
- `render`: `render_columns` / `render_batches` / `render_rows` stream bytes (gzip optional);
  `render_bytes`, `render_table` and `render_objects` for small, in-memory uses.
- `pg_csv`: `pg_csv_plan` / `pg_csv_chunks` let PostgreSQL write the same CSV for layouts of
  standard and context fields only, at close to COPY's speed.

`services.common.referral_rows.ReferralRowReader` streams rows out of PostgreSQL for it.
"""
