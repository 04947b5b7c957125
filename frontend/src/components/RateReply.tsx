/**
 * Thumbs up/down and an optional comment on one reply (docs/live.md, "Feedback"): the rated
 * replies become fine-tuning data. Rating again replaces the earlier rating.
 */
import { type FormEvent, useState } from 'react';
import { useT } from '../i18n/context';
import type { Rating } from '../protocol/api';

interface Props {
  turnId: string;
  rated?: Rating | null;
  onRate(rating: Rating, comment: string): Promise<void>;
}

/** A thumb (drawn here, so it shows without an emoji font); pointing down when `down`. */
function Thumb({ down = false }: { down?: boolean }) {
  return (
    <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" style={down ? { transform: 'rotate(180deg)' } : undefined}>
      <path fill="currentColor"
        d="M2 10h4v11H2z M8 21h9.5a2 2 0 0 0 2-1.6l1.4-7A2 2 0 0 0 19 10h-5.5l.9-4.3a1.8 1.8 0 0 0-3.2-1.4L8 10z" />
    </svg>
  );
}

export function RateReply({ turnId, rated = null, onRate }: Props) {
  const { t } = useT();
  const [rating, setRating] = useState<Rating | null>(rated);
  const [comment, setComment] = useState('');
  const [commenting, setCommenting] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const send = async (r: Rating, text: string) => {
    setBusy(true);
    setError(null);
    try {
      await onRate(r, text);
      setRating(r);
      setCommenting(false);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  const submitComment = (e: FormEvent) => {
    e.preventDefault();
    void send(rating ?? 'up', comment.trim());
  };

  return (
    <span className="rate" data-testid="rate" data-turn-id={turnId} data-rating={rating ?? ''}>
      <button type="button" className={rating === 'up' ? 'rate-btn on' : 'rate-btn'} aria-pressed={rating === 'up'}
        aria-label={t('rateUp')} title={t('rateUp')} data-testid="rate-up" disabled={busy}
        onClick={() => void send('up', comment.trim())}><Thumb /></button>
      <button type="button" className={rating === 'down' ? 'rate-btn on' : 'rate-btn'} aria-pressed={rating === 'down'}
        aria-label={t('rateDown')} title={t('rateDown')} data-testid="rate-down" disabled={busy}
        onClick={() => void send('down', comment.trim())}><Thumb down /></button>
      {rating !== null && !commenting && (
        <button type="button" className="link" data-testid="rate-comment" onClick={() => setCommenting(true)}>
          {t('rateComment')}
        </button>
      )}
      {commenting && (
        <form className="rate-form" onSubmit={submitComment}>
          <input value={comment} maxLength={2000} aria-label={t('rateComment')} placeholder={t('rateComment')}
            data-testid="rate-comment-text" onChange={(e) => setComment(e.target.value)} />
          <button type="submit" disabled={busy}>{t('save')}</button>
        </form>
      )}
      {error && <small className="warn" role="alert">{error}</small>}
    </span>
  );
}
