"""fal-style webhooks: the body fal would send, signed the way fal signs (Ed25519), delivered
with retries when a job submitted with ``fal_webhook`` ends."""
