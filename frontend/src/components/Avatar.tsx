/**
 * The 2D character. Expression (brows, eyes, mouth shape, blush) follows the emotion through CSS
 * transitions. With the avatar control stream open (`animator`), the mouth, vowel shape, head and
 * gaze follow the same events VTube Studio gets (docs/avatar-control.md): the values are read every
 * animation frame and written straight to CSS variables so React does not re-render at 60 Hz.
 * Without it the mouth falls back to the playback level read from an AnalyserNode.
 */
import { useEffect, useRef } from 'react';
import type { AvatarAnimator } from '../avatar/animator';
import type { Emotion } from '../protocol/messages';

interface Props {
  emotion: Emotion;
  analyser: AnalyserNode | null;
  animator?: AvatarAnimator | null;
  clock?: () => number;
  speaking: boolean;
  label: string;
}

const VOWEL_WIDTH: Record<string, number> = { A: 1, I: 1.35, U: 0.6, E: 1.2, O: 0.75 };

export function Avatar({ emotion, analyser, animator, clock, speaking, label }: Props) {
  const ref = useRef<SVGSVGElement>(null);

  useEffect(() => {
    const el = ref.current;
    if (!el || !animator || !clock) return;
    let raf = 0;
    const tick = () => {
      const v = animator.values(clock());
      const open = v.AvatarMouthOpen;
      let vowel = '';
      for (const x of ['A', 'I', 'U', 'E', 'O']) if (v[`AvatarVowel${x}`] > 0) vowel = x;
      el.style.setProperty('--mouth-open', open.toFixed(3));
      el.style.setProperty('--mouth-wide', String(VOWEL_WIDTH[vowel] ?? 1));
      el.style.setProperty('--head-x', v.AvatarHeadX.toFixed(2));
      el.style.setProperty('--head-y', v.AvatarHeadY.toFixed(2));
      el.style.setProperty('--head-z', v.AvatarHeadZ.toFixed(2));
      el.style.setProperty('--eye-x', v.AvatarEyeX.toFixed(3));
      el.style.setProperty('--eye-y', v.AvatarEyeY.toFixed(3));
      el.dataset.mouth = open > 0.05 ? 'open' : 'closed';
      el.dataset.vowel = vowel;
      el.dataset.source = 'events';
      raf = requestAnimationFrame(tick);
    };
    raf = requestAnimationFrame(tick);
    return () => cancelAnimationFrame(raf);
  }, [animator, clock]);

  useEffect(() => {
    const el = ref.current;
    if (!el || !analyser || animator) return;
    el.dataset.source = 'level';
    const buf = new Float32Array(analyser.fftSize);
    let level = 0;
    let raf = 0;
    const tick = () => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
      const rms = Math.sqrt(sum / buf.length);
      // fast attack, slower release: the mouth snaps open on syllables and closes smoothly
      const target = Math.min(1, rms * 6);
      level = target > level ? target : level * 0.8 + target * 0.2;
      el.style.setProperty('--mouth-open', level.toFixed(3));
      el.dataset.mouth = level > 0.05 ? 'open' : 'closed';
      raf = requestAnimationFrame(tick);
    };
    raf = requestAnimationFrame(tick);
    return () => cancelAnimationFrame(raf);
  }, [analyser, animator]);

  return (
    <svg
      ref={ref}
      className={`avatar emotion-${emotion}${speaking ? ' is-speaking' : ''}`}
      viewBox="0 0 200 220"
      role="img"
      aria-label={label}
      data-testid="avatar"
      data-emotion={emotion}
    >
      <defs>
        <radialGradient id="skin" cx="50%" cy="40%" r="60%">
          <stop offset="0%" stopColor="#ffe3cf" />
          <stop offset="100%" stopColor="#f5c4a5" />
        </radialGradient>
      </defs>
      <g className="avatar-body">
        <g className="avatar-head">
          <path className="hair-back" d="M30 110 Q28 30 100 26 Q172 30 170 110 L170 170 Q100 190 30 170 Z" />
          <ellipse className="face" cx="100" cy="110" rx="62" ry="70" fill="url(#skin)" />
          <path className="hair-front" d="M38 96 Q50 40 100 38 Q150 40 162 96 Q140 70 120 66 Q104 84 70 80 Q52 84 38 96 Z" />
          <g className="blush">
            <ellipse cx="62" cy="132" rx="11" ry="6" />
            <ellipse cx="138" cy="132" rx="11" ry="6" />
          </g>
          <g className="brows">
            <path className="brow brow-left" d="M58 86 Q72 79 86 85" />
            <path className="brow brow-right" d="M114 85 Q128 79 142 86" />
          </g>
          <g className="eyes">
            <g className="eye eye-left">
              <ellipse className="eye-white" cx="72" cy="108" rx="12" ry="13" />
              <circle className="pupil" cx="73" cy="109" r="7" />
              <circle className="glint" cx="76" cy="105" r="2.2" />
            </g>
            <g className="eye eye-right">
              <ellipse className="eye-white" cx="128" cy="108" rx="12" ry="13" />
              <circle className="pupil" cx="127" cy="109" r="7" />
              <circle className="glint" cx="130" cy="105" r="2.2" />
            </g>
          </g>
          <g className="mouth">
            <path className="mouth-line" />
            <ellipse className="mouth-open" cx="100" cy="152" rx="13" ry="10" />
          </g>
        </g>
      </g>
    </svg>
  );
}
