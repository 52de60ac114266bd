'use strict';
// Handoff's Zapier app: the "New Referral" trigger (a REST hook on Handoff's export API,
// with a polling fallback), the "Add to Custom Audience" action and its dropdown.
// Every call goes to the export API (services/export/zapier_routes.py documents each
// route; services/export/openapi.yaml is the contract) with the user's account token.

const { version: platformVersion } = require('zapier-platform-core');
const { version } = require('./package.json');

const { DEFAULT_BASE_URL, baseUrl } = require('./base-url');

// Every request carries the account token; an answer that is not 2xx becomes an error
// with Handoff's own explanation (an RFC 9457 problem document's `detail`).
const addToken = (request, z, bundle) => {
  if (bundle.authData && bundle.authData.api_key) {
    request.headers = request.headers || {};
    request.headers.Authorization = `Bearer ${bundle.authData.api_key}`;
  }
  return request;
};

const explainErrors = (response, z) => {
  if (response.status < 400) {
    return response;
  }
  let detail = response.content;
  try {
    const problem = JSON.parse(response.content);
    detail = problem.detail || problem.title || detail;
  } catch (err) {
    // not a problem document: keep the text
  }
  if (response.status === 401) {
    throw new z.errors.ExpiredAuthError(`Handoff refused the token: ${detail}`);
  }
  throw new z.errors.Error(`Handoff answered ${response.status}: ${detail}`, 'HandoffError', response.status);
};

const call = async (z, bundle, method, path, options = {}) => {
  const response = await z.request({
    method,
    url: `${baseUrl(bundle)}${path}`,
    skipThrowForStatus: true, // explainErrors says why
    ...options,
  });
  return response.data === undefined ? response.json : response.data;
};

const campaignScope = (bundle) => {
  const ids = [].concat(bundle.inputData.campaign_ids || []).filter(Boolean);
  return ids.length ? ids : null;
};

const authentication = {
  type: 'custom',
  fields: [
    {
      key: 'api_key',
      label: 'Account token',
      type: 'password',
      required: true,
      helpText:
        'A Handoff account token (hoff_at_…) with the scopes referrals:read, config:read and config:write.',
    },
    {
      key: 'base_url',
      label: 'Handoff API URL',
      type: 'string',
      required: false,
      helpText: `Your Handoff export API, if not ${DEFAULT_BASE_URL}.`,
    },
  ],
  // The test call: who the token is (any valid credential may ask).
  test: (z, bundle) => call(z, bundle, 'GET', '/v1/me'),
  connectionLabel: (z, bundle) => bundle.inputData.name || bundle.inputData.account_id,
};

// Handoff sends each referral as one JSON object: the standard fields of its default
// layout plus a stable `id`. The sample shows a few of them.
const SAMPLE = {
  id: '1042',
  seq: '1042',
  email: 'ann@example.com',
  first_name: 'Ann',
  last_name: 'Lee',
  campaign_name: 'Spring offer',
  received_at: '2026-11-30T09:15:02.123456Z',
};

const newReferral = {
  key: 'new_referral',
  noun: 'Referral',
  display: {
    label: 'New Referral',
    description: 'Triggers the moment a new referral arrives in Handoff.',
  },
  operation: {
    type: 'hook',
    inputFields: [
      {
        key: 'campaign_ids',
        label: 'Campaign IDs',
        list: true,
        required: false,
        helpText: 'Only referrals of these campaigns (leave empty for every campaign).',
      },
    ],
    performSubscribe: (z, bundle) =>
      call(z, bundle, 'POST', '/v1/zapier/subscriptions', {
        json: {
          target_url: bundle.targetUrl,
          event: 'new_referral',
          campaign_ids: campaignScope(bundle),
        },
      }),
    performUnsubscribe: async (z, bundle) => {
      await call(z, bundle, 'DELETE', `/v1/zapier/subscriptions/${encodeURIComponent(bundle.subscribeData.id)}`);
      return {};
    },
    // A hook's body is one referral.
    perform: (z, bundle) => [bundle.cleanedRequest],
    // The polling fallback and sample data: the newest referrals, newest first, the
    // same fields and ids as the hooks.
    performList: (z, bundle) => {
      const scope = campaignScope(bundle);
      return call(z, bundle, 'GET', '/v1/zapier/referrals', {
        params: scope ? { campaign_id: scope.join(',') } : {},
      });
    },
    sample: SAMPLE,
  },
};

// The action's dropdown of audiences (a hidden trigger, as Zapier's dynamic fields use).
const audienceList = {
  key: 'audience_list',
  noun: 'Audience',
  display: { label: 'Custom Audiences', description: 'Lists custom audiences.', hidden: true },
  operation: {
    perform: (z, bundle) => call(z, bundle, 'GET', '/v1/zapier/audiences'),
    sample: { id: '5f0c9c1e-8f0b-4e43-9a35-3a8a6f0d2b11', name: 'Customers', kind: 'exclude' },
  },
};

const addToAudience = {
  key: 'add_to_audience',
  noun: 'Audience Member',
  display: {
    label: 'Add to Custom Audience',
    description:
      'Adds an email to a custom audience (hashed on arrival; Handoff never stores the address).',
  },
  operation: {
    inputFields: [
      {
        key: 'audience_id',
        label: 'Custom Audience',
        required: true,
        dynamic: 'audience_list.id.name',
      },
      { key: 'email', label: 'Email', required: true, helpText: 'An email address, or its SHA-256 or MD5.' },
    ],
    perform: (z, bundle) =>
      call(z, bundle, 'POST', `/v1/zapier/audiences/${encodeURIComponent(bundle.inputData.audience_id)}/members`, {
        json: { email: bundle.inputData.email },
      }),
    sample: { accepted: 1, duplicates: 0, member_count: 1200, state: 'ready', state_reason: null },
  },
};

module.exports = {
  version,
  platformVersion,
  authentication,
  beforeRequest: [addToken],
  afterResponse: [explainErrors],
  triggers: {
    [newReferral.key]: newReferral,
    [audienceList.key]: audienceList,
  },
  creates: {
    [addToAudience.key]: addToAudience,
  },
};
