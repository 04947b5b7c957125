/**
 * The admin's download of the rated replies as fine-tuning JSONL, with the validation pass's
 * summary (docs/live.md, "Feedback"). The link carries the sign-in cookie like any GET.
 */
import { useEffect, useState } from 'react';
import { useT } from '../i18n/context';
import { request } from '../protocol/api';

type RatingFilter = 'up' | 'down' | 'all';
type SourceFilter = 'all' | 'conversation' | 'live';

export function exportQuery(rating: RatingFilter, source: SourceFilter): string {
  return new URLSearchParams({ rating, source }).toString();
}

export interface ExportSummary {
  lines: number;
  rejected: { turnId: string; reason: string }[];
}

export function parseSummary(body: unknown): ExportSummary {
  const o = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  const rejected = Array.isArray(o.rejected) ? o.rejected : [];
  return {
    lines: typeof o.lines === 'number' ? o.lines : 0,
    rejected: rejected.map((r) => {
      const x = (r && typeof r === 'object' ? r : {}) as Record<string, unknown>;
      return { turnId: String(x.turn_id ?? ''), reason: String(x.reason ?? '') };
    }),
  };
}

export function ExportPanel({ base = '' }: { base?: string }) {
  const { t } = useT();
  const [rating, setRating] = useState<RatingFilter>('up');
  const [source, setSource] = useState<SourceFilter>('all');
  const [summary, setSummary] = useState<ExportSummary | null>(null);
  const query = exportQuery(rating, source);

  useEffect(() => {
    let stale = false;
    request(base, `/api/v1/admin/export/finetune/validation?${query}`).then(
      (body) => !stale && setSummary(parseSummary(body)),
      () => !stale && setSummary(null),
    );
    return () => {
      stale = true;
    };
  }, [base, query]);

  return (
    <div className="live-panel live-export" data-testid="live-export">
      <h3>{t('exportTitle')}</h3>
      <select aria-label={t('exportRating')} value={rating} onChange={(e) => setRating(e.target.value as RatingFilter)}>
        <option value="up">{t('rateUp')}</option>
        <option value="down">{t('rateDown')}</option>
        <option value="all">{t('exportAll')}</option>
      </select>
      <select aria-label={t('exportSource')} value={source} onChange={(e) => setSource(e.target.value as SourceFilter)}>
        <option value="all">{t('exportAll')}</option>
        <option value="conversation">{t('tabTalk')}</option>
        <option value="live">{t('tabLive')}</option>
      </select>
      <a href={`${base}/api/v1/admin/export/finetune?${query}`} download="finetune.jsonl" data-testid="live-export-link">
        {t('exportDownload')}
      </a>
      {summary && (
        <small className="muted" data-testid="live-export-summary" data-lines={summary.lines}
          data-rejected={summary.rejected.length} title={summary.rejected.map((r) => `${r.turnId}: ${r.reason}`).join('\n')}>
          {' '}{summary.lines} {t('exportLines')}, {summary.rejected.length} {t('exportRejected')}
        </small>
      )}
    </div>
  );
}
