'use strict';
// Where Handoff's export API is: the connection's own field, else the app's environment
// (`zapier env:set <version> HANDOFF_BASE_URL=…`), else the hosted default.
const DEFAULT_BASE_URL = 'https://api.handoff.example';

const baseUrl = (bundle) =>
  String(
    (bundle.authData && bundle.authData.base_url) || process.env.HANDOFF_BASE_URL || DEFAULT_BASE_URL,
  ).replace(/\/+$/, '');

module.exports = { DEFAULT_BASE_URL, baseUrl };
