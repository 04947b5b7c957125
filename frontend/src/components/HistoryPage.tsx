import { useCallback, useEffect, useState } from 'react';
import { ApiClient, ApiError, type ProsodyPoint, type SessionSummary, type TurnRecord } from '../protocol/api';
import { useT } from '../i18n/context';
import { ProsodyTrend } from './ProsodyTrend';
import { RateReply } from './RateReply';

interface Props {
  api: ApiClient;
  currentSessionId: string | null;
  onError(code: string, message: string, traceId: string | null): void;
}

export function HistoryPage({ api, currentSessionId, onError }: Props) {
  const { t, lang } = useT();
  const [sessions, setSessions] = useState<SessionSummary[] | null>(null);
  const [selected, setSelected] = useState<string | null>(currentSessionId);
  const [turns, setTurns] = useState<TurnRecord[] | null>(null);
  const [prosody, setProsody] = useState<ProsodyPoint[] | null>(null);

  const fail = useCallback(
    (err: unknown) => {
      const e = err instanceof ApiError ? err : new ApiError(0, 'NETWORK', String(err));
      onError(e.code, e.message, e.traceId);
    },
    [onError],
  );

  const loadSessions = useCallback(() => {
    api.sessions().then(setSessions, fail);
  }, [api, fail]);

  useEffect(loadSessions, [loadSessions]);

  useEffect(() => {
    if (!selected) return;
    setTurns(null);
    setProsody(null);
    api.turns(selected).then(setTurns, fail);
    api.prosody(selected).then(setProsody, () => setProsody(null));
  }, [api, selected, fail]);

  const fmt = (iso: string | null) => (iso ? new Date(iso).toLocaleString(lang === 'ko' ? 'ko-KR' : 'en-US') : '');

  return (
    <section className="history" data-testid="history">
      <div className="history-list">
        <header>
          <h2>{t('sessions')}</h2>
          <button type="button" onClick={loadSessions}>{t('refresh')}</button>
        </header>
        {sessions?.length === 0 && <p className="muted">{t('noSessions')}</p>}
        <ul>
          {sessions?.map((s) => (
            <li key={s.session_id}>
              <button
                type="button"
                className={s.session_id === selected ? 'session selected' : 'session'}
                data-testid="session-item"
                data-session-id={s.session_id}
                onClick={() => setSelected(s.session_id)}
              >
                <span>{fmt(s.start_time) || s.session_id.slice(0, 8)}</span>
                <small>{s.session_id === currentSessionId ? '● ' : ''}{s.status}{s.turns !== null ? ` · ${s.turns}` : ''}</small>
              </button>
            </li>
          ))}
        </ul>
      </div>
      {selected && (
        <div className="history-detail">
          <h2>{t('turns')}</h2>
          {turns?.length === 0 && <p className="muted">{t('noTurns')}</p>}
          <ol className="turn-list">
            {turns?.map((turn) => (
              <li key={turn.turn_id} data-testid="history-turn">
                <p className="bubble user"><span className="who">{t('you')}</span>{turn.user_input}</p>
                <p className={`bubble ai emotion-${turn.emotion ?? 'neutral'}`}><span className="who">{t('ai')}</span>{turn.ai_response}</p>
                {turn.ai_response && (
                  <RateReply turnId={turn.turn_id} onRate={(rating, comment) => api.rateTurn(turn.turn_id, rating, comment)} />
                )}
              </li>
            ))}
          </ol>
          {prosody !== null && (
            <>
              <h2>{t('prosody')}</h2>
              <ProsodyTrend points={prosody} />
            </>
          )}
        </div>
      )}
    </section>
  );
}
