"""The layout service: custom fields and layouts, their rules, previews and storage.

model (values and the store's interface), rules (validation at save, safe deletes, the
default layout), preview (rendering sample and stored rows), store (the only SQL),
messages (protobuf conversions) and server (the servicer). Connections and tasks will
be sibling packages of this one.
"""
