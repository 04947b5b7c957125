/**
 * The "Live" tab: the director console (docs/live.md, "Director console"). Polls the live routes
 * every second while shown; only an admin sees the tab (the server checks it again).
 */
import { useEffect, useSyncExternalStore } from 'react';
import { useT } from '../i18n/context';
import type { ConsoleSnapshot, LiveConsole } from './console';
import { ExportPanel } from './ExportPanel';
import { AvatarPanel, LiveReplies, MessageQueue, PlatformsPanel, SayBox } from './panels';

export function LivePage({ console: live }: { console: LiveConsole }) {
  const snap = useSyncExternalStore(live.subscribe, live.getSnapshot);
  useEffect(() => {
    live.start();
    return () => live.stop();
  }, [live]);
  return <LiveView snap={snap} live={live} />;
}

/** The console for one snapshot (rendered on its own in the tests). */
export function LiveView({ snap, live }: { snap: ConsoleSnapshot; live: LiveConsole }) {
  const { t } = useT();
  if (!snap.loaded) return <p className="muted">…</p>;
  if (snap.unavailable !== null) {
    return (
      <section className="live" data-testid="live-console" data-available="false">
        <p className="muted" data-testid="live-unavailable">{t('liveUnavailable')}: {snap.unavailable}</p>
        <ExportPanel />
      </section>
    );
  }
  return (
    <section className="live" data-testid="live-console" data-available="true">
      {snap.error && <p className="problem error" role="alert" data-testid="live-error">{snap.error}</p>}
      <div className="live-top">
        <PlatformsPanel platforms={snap.status?.platforms ?? []} paused={snap.status?.paused ?? false}
          onConnect={(p, on) => void live.setConnected(p, on)} onPause={(p) => void live.setPaused(p)} />
        <AvatarPanel avatar={snap.avatar} />
      </div>
      <div className="live-main">
        <MessageQueue messages={snap.messages} onAnswer={(id) => void live.answer(id)}
          onSkip={(id) => void live.skip(id)} onBan={(m) => void live.ban(m)} />
        <div className="live-side">
          <SayBox onSay={(text, emotion) => void live.say(text, emotion)} />
          <LiveReplies replies={snap.replies} ratings={snap.ratings} onRate={live.rate} />
          <ExportPanel />
        </div>
      </div>
    </section>
  );
}
