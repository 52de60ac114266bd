"""Mailchimp (Marketing API v3): audience members upserted from referrals, in real time
(one PUT per referral) or in scheduled batches (POST /lists/{id}, 500 members a call), and
an audience's members read back for custom audiences."""
