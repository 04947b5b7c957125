/** The director console's parts (docs/live.md, "Director console"); each renders what it is given. */
import { type FormEvent, useState } from 'react';
import { RateReply } from '../components/RateReply';
import { useT } from '../i18n/context';
import type { StringKey } from '../i18n/strings';
import type { Rating } from '../protocol/api';
import { type AvatarControl, EMOTIONS, type LiveMessage, type LivePlatform, type LiveReply, type SayEmotion } from './api';

export function PlatformsPanel(props: {
  platforms: LivePlatform[];
  paused: boolean;
  onConnect(platform: string, on: boolean): void;
  onPause(paused: boolean): void;
}) {
  const { t } = useT();
  return (
    <div className="live-panel live-platforms" data-testid="live-platforms">
      <h3>{t('livePlatforms')}</h3>
      <ul>
        {props.platforms.map((p) => (
          <li key={p.platform} data-testid="live-platform" data-platform={p.platform} data-state={p.state}
            data-running={String(p.running)}>
            <strong>{p.platform}</strong> <span className={`pill state-${p.state}`}>{p.state}</span>{' '}
            <small className="muted">×{p.connects}</small>{' '}
            <button type="button" data-testid={p.running ? 'live-disconnect' : 'live-connect'}
              onClick={() => props.onConnect(p.platform, !p.running)}>
              {p.running ? t('liveDisconnect') : t('liveConnect')}
            </button>
          </li>
        ))}
      </ul>
      <button type="button" className={props.paused ? 'primary' : ''} data-testid="live-pause"
        aria-pressed={props.paused} onClick={() => props.onPause(!props.paused)}>
        {props.paused ? t('liveResume') : t('livePause')}
      </button>
      {props.paused && <small className="muted"> {t('livePausedHint')}</small>}
    </div>
  );
}

/** Why a message is not answered, in words ("link", "flood", ...), or that it may be. */
export function verdictLabel(t: (k: StringKey) => string, m: LiveMessage): string {
  const reason = m.reason ?? m.verdict;
  if (m.status === 'dropped' && reason) return `${t('liveDropped')}: ${reason}`;
  return t(`liveStatus_${m.status}` as StringKey);
}

export function MessageQueue(props: {
  messages: LiveMessage[];
  onAnswer(id: number): void;
  onSkip(id: number): void;
  onBan(m: LiveMessage): void;
}) {
  const { t } = useT();
  const newestFirst = [...props.messages].reverse();
  return (
    <div className="live-panel live-queue" data-testid="live-queue">
      <h3>{t('liveQueue')}</h3>
      {newestFirst.length === 0 && <p className="muted">{t('liveNoChat')}</p>}
      <ol>
        {newestFirst.map((m) => {
          const waiting = m.status === 'queued' || m.status === 'picked';
          const done = m.status === 'answering' || m.status === 'answered' || m.status === 'picked';
          return (
            <li key={m.id} className={`live-msg status-${m.status}`} data-testid="live-message" data-id={m.id}
              data-status={m.status} data-verdict={m.verdict ?? ''} data-reason={m.reason ?? ''}>
              <span className="live-who">
                <small className="muted">{m.platform}</small> <strong>{m.user}</strong>
                {m.isStreamer && <small className="pill"> {t('liveStreamer')}</small>}
                {m.amount > 0 && <small className="pill amount"> +{m.amount}</small>}
              </span>
              <span className="live-text">{m.text}</span>
              <small className={`verdict ${m.status === 'dropped' ? 'warn' : ''}`} data-testid="live-verdict">
                {verdictLabel(t, m)}
              </small>
              <span className="live-actions">
                <button type="button" data-testid="live-answer" disabled={done} onClick={() => props.onAnswer(m.id)}>
                  {t('liveAnswer')}
                </button>
                <button type="button" data-testid="live-skip" disabled={!waiting} onClick={() => props.onSkip(m.id)}>
                  {t('liveSkip')}
                </button>
                <button type="button" data-testid="live-ban" onClick={() => props.onBan(m)}>{t('liveBan')}</button>
              </span>
            </li>
          );
        })}
      </ol>
    </div>
  );
}

export function SayBox(props: { onSay(text: string, emotion: SayEmotion): void }) {
  const { t } = useT();
  const [text, setText] = useState('');
  const [emotion, setEmotion] = useState<SayEmotion>('neutral');
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!text.trim()) return;
    props.onSay(text.trim(), emotion);
    setText('');
  };
  return (
    <form className="live-panel live-say" onSubmit={submit} data-testid="live-say">
      <h3>{t('liveSay')}</h3>
      <input value={text} maxLength={500} placeholder={t('liveSayHint')} aria-label={t('liveSay')}
        data-testid="live-say-text" onChange={(e) => setText(e.target.value)} />
      <select value={emotion} aria-label={t('emotion')} onChange={(e) => setEmotion(e.target.value as SayEmotion)}>
        {EMOTIONS.map((em) => <option key={em} value={em}>{t(`emotion_${em}` as StringKey)}</option>)}
      </select>
      <button type="submit" disabled={!text.trim()} data-testid="live-say-send">{t('send')}</button>
    </form>
  );
}

export function LiveReplies(props: {
  replies: LiveReply[];
  ratings: Record<string, Rating>;
  onRate(turnId: string, rating: Rating, comment: string): Promise<void>;
}) {
  const { t } = useT();
  return (
    <div className="live-panel live-replies" data-testid="live-replies">
      <h3>{t('liveReplies')}</h3>
      {props.replies.length === 0 && <p className="muted">{t('liveNoReplies')}</p>}
      <ol>
        {[...props.replies].reverse().map((r) => (
          <li key={r.id} className={`bubble ai emotion-${r.emotion}`} data-testid="live-reply" data-turn-id={r.turnId ?? ''}>
            <span className="who">{r.toUser ? `→ ${r.toUser}` : t('liveTyped')}</span>
            {r.text}
            {r.turnId && (
              <RateReply turnId={r.turnId} rated={props.ratings[r.turnId] ?? null}
                onRate={(rating, comment) => props.onRate(r.turnId ?? '', rating, comment)} />
            )}
          </li>
        ))}
      </ol>
    </div>
  );
}

export function AvatarPanel({ avatar }: { avatar: AvatarControl | null }) {
  const { t } = useT();
  if (!avatar) return null;
  const label = !avatar.enabled ? t('liveAvatarOff') : avatar.connected ? t('vts_running') : avatar.state;
  return (
    <div className="live-panel live-avatar" data-testid="live-avatar" data-state={avatar.state}
      data-connected={String(avatar.connected)} data-follows={String(avatar.followsLive)} title={avatar.lastError || undefined}>
      <h3>{t('vts')}</h3>
      <span className={`vts-pill vts-${avatar.state}`}>{label}</span>
      {avatar.modelName && <small> · {avatar.modelName}</small>}
      {avatar.enabled && <small className="muted"> · {avatar.followsLive ? t('liveAvatarFollows') : t('liveAvatarElsewhere')}</small>}
    </div>
  );
}
