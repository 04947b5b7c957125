/**
 * The VTube Studio bridge's state (docs/avatar-control.md), polled from `/api/v1/health`; shows
 * nothing when the bridge is not enabled.
 */
import { useEffect, useState } from 'react';
import { useT } from '../i18n/context';
import type { ApiClient, VtsStatus as Status } from '../protocol/api';

const POLL_MS = 5000;

export function VtsStatus({ api }: { api: ApiClient }) {
  const { t } = useT();
  const [status, setStatus] = useState<Status | null>(null);

  useEffect(() => {
    let stopped = false;
    const poll = async () => {
      try {
        const s = await api.vtubeStudio();
        if (!stopped) setStatus(s);
      } catch {
        if (!stopped) setStatus(null);
      }
    };
    void poll();
    const timer = setInterval(() => void poll(), POLL_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [api]);

  if (!status) return null;
  const key = status.state === 'running' || status.state === 'waiting_for_allow' || status.state === 'denied'
    ? `vts_${status.state}` : 'vts_offline';
  return (
    <span
      className={`vts-pill vts-${status.state}`}
      data-testid="vts-status"
      data-state={status.state}
      title={status.lastError || undefined}
    >
      {t('vts')}: {t(key as 'vts_running')}
    </span>
  );
}
