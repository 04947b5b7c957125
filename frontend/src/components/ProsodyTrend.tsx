import type { ProsodyPoint } from '../protocol/api';
import { useT } from '../i18n/context';

const SERIES = [
  { key: 'confidence', color: '#4f8cff' },
  { key: 'stability', color: '#2fbf71' },
  { key: 'affability', color: '#f29f3d' },
] as const;

/** A small line chart of the three prosody scores (0-100) across a session's utterances. */
export function ProsodyTrend({ points }: { points: ProsodyPoint[] }) {
  const { t } = useT();
  if (points.length === 0) return <p className="muted">{t('noProsody')}</p>;
  const w = 320, h = 120, pad = 8;
  const x = (i: number) => (points.length === 1 ? w / 2 : pad + (i * (w - 2 * pad)) / (points.length - 1));
  const y = (v: number) => h - pad - (Math.max(0, Math.min(100, v)) / 100) * (h - 2 * pad);
  return (
    <figure className="prosody" data-testid="prosody-trend">
      <svg viewBox={`0 0 ${w} ${h}`} role="img" aria-label={t('prosody')}>
        {[25, 50, 75].map((g) => (
          <line key={g} x1={0} x2={w} y1={y(g)} y2={y(g)} className="grid" />
        ))}
        {SERIES.map((s) => (
          <g key={s.key}>
            <polyline fill="none" stroke={s.color} strokeWidth={2} points={points.map((p, i) => `${x(i)},${y(p[s.key])}`).join(' ')} />
            {points.map((p, i) => (
              <circle key={i} cx={x(i)} cy={y(p[s.key])} r={3} fill={s.color} opacity={p.reliable ? 1 : 0.35} />
            ))}
          </g>
        ))}
      </svg>
      <figcaption>
        {SERIES.map((s) => (
          <span key={s.key} className="legend">
            <i style={{ background: s.color }} /> {t(s.key)} {points[points.length - 1][s.key].toFixed(0)}
          </span>
        ))}
      </figcaption>
    </figure>
  );
}
