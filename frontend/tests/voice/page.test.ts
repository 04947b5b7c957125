import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
import { describe, expect, it } from 'vitest';

import { VoiceProfilesPage } from '../../src/voice/VoiceProfilesPage';

describe('VoiceProfilesPage', () => {
  it('renders the recorder, the upload field and the loading list before the API answers', () => {
    const html = renderToString(
      createElement(VoiceProfilesPage, { apiBase: 'http://api', selectedProfileId: null, onSelect: () => undefined }),
    );
    expect(html).toContain('Voice profiles');
    expect(html).toContain('Record');
    expect(html).toContain('type="file"');
    expect(html).toContain('Loading voices');
    expect(html).toMatch(/<button[^>]*type="submit"[^>]*disabled/);
  });
});
