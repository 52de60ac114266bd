'use strict';
// The app through zapier-platform-core's own tester, against a running Handoff (never the
// internet). tests/integration/test_zapier_app.py starts the export API on loopback with
// a real database, prepares an account, and runs `node --test` here with:
//   HANDOFF_BASE_URL     the export API
//   HANDOFF_TOKEN        an account token (referrals:read, config:read, config:write)
//   HANDOFF_ACCOUNT_ID   its account
//   HANDOFF_FIXTURE      JSON: {campaigns: {name: id}, seqs: {name: [seq, ...]},
//                        audience_id, target_url}
const test = require('node:test');
const assert = require('node:assert/strict');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { baseUrl } = require('../base-url');

const appTester = zapier.createAppTester(App);

const required = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run this through tests/integration/test_zapier_app.py`);
  return value;
};
const BASE_URL = required('HANDOFF_BASE_URL');
const TOKEN = required('HANDOFF_TOKEN');
const ACCOUNT = required('HANDOFF_ACCOUNT_ID');
const FIXTURE = JSON.parse(required('HANDOFF_FIXTURE'));
const authData = { api_key: TOKEN, base_url: BASE_URL };

const handoff = async (method, path) => {
  const answer = await fetch(`${BASE_URL}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(answer.ok, true, `${method} ${path}: ${answer.status}`);
  return answer.status === 204 ? null : answer.json();
};

test('the app definition is valid by Zapier\'s schema (what `zapier validate` checks)', () => {
  // zapier-platform-core's own validate command (the CLI sends it): compile, then check.
  const schema = require('zapier-platform-core/src/tools/schema');
  assert.deepEqual(schema.validateApp(schema.prepareApp(App)), []);
});

test('the base URL comes from the connection, else the environment', () => {
  assert.equal(baseUrl({ authData: { base_url: 'https://h.example/' } }), 'https://h.example');
  const saved = process.env.HANDOFF_BASE_URL;
  try {
    process.env.HANDOFF_BASE_URL = 'https://env.example';
    assert.equal(baseUrl({ authData: {} }), 'https://env.example');
  } finally {
    process.env.HANDOFF_BASE_URL = saved;
  }
});

test('authentication: the test call answers who the token is', async () => {
  const me = await appTester(App.authentication.test, { authData });
  assert.equal(me.account_id, ACCOUNT);
  assert.equal(me.kind, 'account');
  assert.deepEqual(me.scopes, ['config:read', 'config:write', 'referrals:read']);
});

test('authentication: a wrong token is refused with Handoff\'s reason', async () => {
  await assert.rejects(
    appTester(App.authentication.test, { authData: { ...authData, api_key: 'hoff_at_wrong' } }),
    (err) => err.name === 'ExpiredAuthError' && /Handoff refused the token/.test(err.message),
  );
});

test('performList: the newest referrals, newest first, with stable ids', async () => {
  const items = await appTester(App.triggers.new_referral.operation.performList, { authData, inputData: {} });
  const all = [...FIXTURE.seqs.spring, ...FIXTURE.seqs.autumn].sort((a, b) => b - a);
  assert.deepEqual(items.map((r) => r.id), all.map(String));
  assert.equal(items[0].email, 'autumn-1@example.com');
  assert.equal(items[0].campaign_name, 'Autumn offer');
});

test('performList: scoped to campaigns', async () => {
  const items = await appTester(App.triggers.new_referral.operation.performList, {
    authData,
    inputData: { campaign_ids: [FIXTURE.campaigns.spring] },
  });
  assert.deepEqual(
    items.map((r) => r.id),
    [...FIXTURE.seqs.spring].reverse().map(String),
  );
});

test('performSubscribe and performUnsubscribe: a REST hook, active then removed', async () => {
  const bundle = {
    authData,
    targetUrl: FIXTURE.target_url,
    inputData: { campaign_ids: [FIXTURE.campaigns.autumn] },
  };
  const made = await appTester(App.triggers.new_referral.operation.performSubscribe, bundle);
  assert.match(made.id, /^[0-9a-f-]{36}$/);
  assert.equal(made.target_url, FIXTURE.target_url);
  assert.deepEqual(made.campaign_ids, [FIXTURE.campaigns.autumn]);
  const active = await handoff('GET', `/v1/zapier/subscriptions/${made.id}`);
  assert.equal(active.state, 'active');

  await appTester(App.triggers.new_referral.operation.performUnsubscribe, {
    authData,
    subscribeData: made,
  });
  const removed = await handoff('GET', `/v1/zapier/subscriptions/${made.id}`);
  assert.equal(removed.state, 'removed');
  assert.equal(removed.removed_reason, 'unsubscribed');
});

test('performSubscribe: a target URL Handoff refuses is an error, not a subscription', async () => {
  await assert.rejects(
    appTester(App.triggers.new_referral.operation.performSubscribe, {
      authData,
      targetUrl: 'http://hooks.zapier.example/not-tls',
      inputData: {},
    }),
    /Handoff answered 400/,
  );
});

test('perform: a hook body is one referral', async () => {
  const body = { id: '7', email: 'ann@example.com' };
  const items = await appTester(App.triggers.new_referral.operation.perform, {
    authData,
    cleanedRequest: body,
  });
  assert.deepEqual(items, [body]);
});

test('the audience dropdown and the add-to-audience action', async () => {
  const choices = await appTester(App.triggers.audience_list.operation.perform, { authData });
  assert.deepEqual(
    choices.map((c) => [c.id, c.name]),
    [[FIXTURE.audience_id, 'Zapier customers']],
  );
  const added = await appTester(App.creates.add_to_audience.operation.perform, {
    authData,
    inputData: { audience_id: FIXTURE.audience_id, email: ' Zed@Example.com ' },
  });
  assert.equal(added.accepted, 1);
  assert.equal(added.member_count, 1);
  await assert.rejects(
    appTester(App.creates.add_to_audience.operation.perform, {
      authData,
      inputData: { audience_id: FIXTURE.audience_id, email: 'not an email' },
    }),
    /Handoff answered 400/,
  );
});
