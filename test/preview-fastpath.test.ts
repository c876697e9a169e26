// The whole preview suite (routing, wake, private tokens, header stripping, X-Forwarded-*,
// keep-alive with several requests per connection, error pages, aborts) once more through the
// experimental raw-socket fast path, BOXD_PREVIEW_FASTPATH=true (testConfig reads process.env).
process.env.BOXD_PREVIEW_FASTPATH = 'true';
await import('./preview.test.ts');
